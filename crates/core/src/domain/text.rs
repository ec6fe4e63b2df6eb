//! Which characters text chosen by a requester may hold (threat row 33).
//!
//! Everything a workload states — action, environment, resource, reason, details keys and values, the
//! idempotency key — is shown to reviewers and written to the audit log. Characters of the Unicode general
//! categories below make text read as something it is not, so none of them is accepted in any of those
//! strings:
//!
//! - **Cf** (format): bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069) reorder what is
//!   shown (`service/\u{202E}gnigats-stnemyap` reads "service/payments-staging"); zero-width characters
//!   (U+200B–U+200D, U+2060, U+FEFF) and the soft hyphen hide differences between strings that look equal;
//!   tag characters (U+E0000 block) carry invisible text.
//! - **Zl**, **Zp** (U+2028, U+2029): line breaks that slip past "no control characters".
//! - **Co** (private use): glyphs with no agreed meaning; a font or client may draw anything.
//! - **Cs** (surrogates): cannot occur in a Rust `str`, and JSON `\uD800` escapes are refused by the JSON
//!   parser already; listed so the rule says what it means.
//!
//! Allowed on purpose: every letter, mark, number, punctuation and symbol (accents, CJK, emoji), and the
//! space separators of Zs (U+00A0 no-break space included: it is visible as a space, not as nothing).
//! Control characters (Cc) are refused by each field's own rule (a reason may hold `\n`).
//!
//! This module is the one place the rule lives; the HTTP layer, the service and the CLI only call it.

use std::fmt;

use unicode_general_category::{get_general_category, GeneralCategory};

/// The first refused character found in a string, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HiddenChar {
    pub ch: char,
    /// The Unicode general category, abbreviated (`Cf`, `Zl`, `Zp`, `Co`, `Cs`).
    pub category: &'static str,
    /// Position in characters (Unicode scalar values), from 0.
    pub position: usize,
}

impl HiddenChar {
    /// `U+202E`: the form every message uses.
    pub fn code_point(&self) -> String {
        code_point(self.ch)
    }
}

impl fmt::Display for HiddenChar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.category {
            "Cf" => "an invisible format character",
            "Zl" => "a line separator",
            "Zp" => "a paragraph separator",
            "Co" => "a private-use character",
            _ => "a surrogate",
        };
        write!(
            f,
            "contains {} ({what}, category {}) at character {}; invisible, bidirectional, separator and \
             private-use characters are refused so that text shows what it holds",
            self.code_point(),
            self.category,
            self.position + 1
        )
    }
}

/// `U+XXXX` (at least four hex digits, upper case).
pub fn code_point(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// The refused general category of `c`, if it has one.
pub fn refused_category(c: char) -> Option<&'static str> {
    match get_general_category(c) {
        GeneralCategory::Format => Some("Cf"),
        GeneralCategory::LineSeparator => Some("Zl"),
        GeneralCategory::ParagraphSeparator => Some("Zp"),
        GeneralCategory::PrivateUse => Some("Co"),
        GeneralCategory::Surrogate => Some("Cs"),
        _ => None,
    }
}

/// Ok when `s` holds no refused character; otherwise the first one.
pub fn check_visible(s: &str) -> Result<(), HiddenChar> {
    match s.chars().enumerate().find_map(|(position, ch)| refused_category(ch).map(|category| (position, ch, category)))
    {
        None => Ok(()),
        Some((position, ch, category)) => Err(HiddenChar { ch, category, position }),
    }
}

/// `s` with every refused character written as `{U+202E}`: for messages and audit records that must
/// name a refused string without carrying its hidden characters along.
pub fn escape_hidden(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if refused_category(c).is_some() {
            out.push('{');
            out.push_str(&code_point(c));
            out.push('}');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// One or more code points of every refused category, from the Unicode 16 data (UnicodeData.txt).
    const REFUSED: &[(u32, &str)] = &[
        (0x00AD, "Cf"), // soft hyphen
        (0x0600, "Cf"),
        (0x0605, "Cf"),
        (0x061C, "Cf"), // Arabic letter mark
        (0x06DD, "Cf"),
        (0x070F, "Cf"),
        (0x0890, "Cf"),
        (0x0891, "Cf"),
        (0x08E2, "Cf"),
        (0x180E, "Cf"), // Mongolian vowel separator
        (0x200B, "Cf"), // zero width space
        (0x200C, "Cf"),
        (0x200D, "Cf"), // zero width joiner
        (0x200E, "Cf"), // LRM
        (0x200F, "Cf"), // RLM
        (0x202A, "Cf"),
        (0x202D, "Cf"),
        (0x202E, "Cf"), // right-to-left override
        (0x2060, "Cf"), // word joiner
        (0x2064, "Cf"),
        (0x2066, "Cf"), // LRI
        (0x2069, "Cf"), // PDI
        (0x206F, "Cf"),
        (0xFEFF, "Cf"), // BOM / zero width no-break space
        (0xFFF9, "Cf"),
        (0xFFFB, "Cf"),
        (0x110BD, "Cf"),
        (0x110CD, "Cf"),
        (0x13430, "Cf"),
        (0x1343F, "Cf"),
        (0x1BCA0, "Cf"),
        (0x1BCA3, "Cf"),
        (0x1D173, "Cf"),
        (0x1D17A, "Cf"),
        (0xE0001, "Cf"), // language tag
        (0xE0020, "Cf"), // tag space
        (0xE007F, "Cf"), // cancel tag
        (0x2028, "Zl"),
        (0x2029, "Zp"),
        (0xE000, "Co"),
        (0xF8FF, "Co"),
        (0xF0000, "Co"),
        (0xFFFFD, "Co"),
        (0x100000, "Co"),
        (0x10FFFD, "Co"),
    ];

    /// Neighbours and look-alikes that stay allowed.
    const ALLOWED: &[u32] = &[
        0x0041, 0x007A, 0x00E9, // A z é
        0x00A0, // NBSP is Zs: visible as a space
        0x00AC, 0x00AE, // neighbours of U+00AD
        0x0606, 0x061B, 0x061D, 0x06DC, 0x06DE, 0x08E3, 0x180D, 0x180F, // neighbours of Cf code points
        0x200A, // hair space (Zs)
        0x2010, 0x2027, 0x202F, 0x205F, 0x2065, 0x2070, // neighbours of the U+20xx ranges
        0x3000, // ideographic space (Zs)
        0x4E2D, 0x6587, // CJK
        0xD7FF, // last scalar value before the surrogates
        0xF900, // CJK compatibility, right after private use
        0xFEFE, 0xFF00, 0xFFF8, 0xFFFC, // neighbours of U+FEFF and U+FFF9..FFFB
        0x1F44D, 0x1F3FD, 0x2705, // 👍 skin tone, ✅
        0x1D172, 0x1D17B, 0x110BC, 0x110BE, 0x1342F, // neighbours: musical symbols, Kaithi, Egyptian hieroglyphs
        0xE0100, // variation selector 17 (Mn), just past the tag block
        0xFE0F,  // variation selector 16 (Mn): emoji presentation
        0x0301,  // combining acute (Mn)
    ];

    #[test]
    fn t33_every_refused_category_is_caught_with_its_code_point() {
        for &(cp, cat) in REFUSED {
            let c = char::from_u32(cp).unwrap();
            let s = format!("ab{c}cd");
            let e = check_visible(&s).unwrap_err();
            assert_eq!(e.ch, c, "{cp:04X}");
            assert_eq!(e.category, cat, "U+{cp:04X}");
            assert_eq!(e.position, 2);
            assert_eq!(e.code_point(), format!("U+{cp:04X}"));
            assert!(e.to_string().contains(&format!("U+{cp:04X}")), "{e}");
        }
    }

    #[test]
    fn t33_letters_marks_emoji_and_spaces_stay_allowed() {
        for &cp in ALLOWED {
            let c = char::from_u32(cp).unwrap();
            assert_eq!(refused_category(c), None, "U+{cp:04X} ({c}) must stay allowed");
        }
        for s in ["service/payments", "déploiement à 10h", "中文", "Zürich 👍🏽 ✅", "a\u{00A0}b", "e\u{0301}", "a\nb"]
        {
            assert!(check_visible(s).is_ok(), "{s:?}");
        }
    }

    #[test]
    fn t33_surrogates_cannot_reach_a_str_through_json() {
        // A lone surrogate escape is not a Unicode scalar value: serde_json refuses it, so category Cs
        // never reaches the check.
        for bad in [r#""\uD800""#, r#""a\uDFFFb""#, r#""\uDC00\uD800""#] {
            assert!(serde_json::from_str::<String>(bad).is_err(), "{bad}");
        }
        // A proper pair decodes to one scalar value, which is then judged by its own category.
        let pair: String = serde_json::from_str(r#""\uDB80\uDC00""#).unwrap();
        assert_eq!(pair, "\u{F0000}");
        assert_eq!(check_visible(&pair).unwrap_err().category, "Co");
    }

    #[test]
    fn t33_first_refused_character_is_reported_by_character_position() {
        let e = check_visible("é\u{2028}\u{202E}").unwrap_err();
        assert_eq!((e.ch, e.category, e.position), ('\u{2028}', "Zl", 1));
        assert!(e.to_string().contains("U+2028") && e.to_string().contains("character 2"), "{e}");
    }

    #[test]
    fn t33_escape_hidden_names_each_refused_character() {
        assert_eq!(escape_hidden("service/\u{202E}gnigats"), "service/{U+202E}gnigats");
        assert_eq!(escape_hidden("a\u{200B}\u{E0041}b"), "a{U+200B}{U+E0041}b");
        assert_eq!(escape_hidden("plain é 👍"), "plain é 👍");
    }
}
