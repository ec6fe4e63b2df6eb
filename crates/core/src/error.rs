//! One way to print an error with its whole cause chain (`outer: inner: root`), for logs and CLI messages.

/// `e` and each of its sources, joined by `: `.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        src = s.source();
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);
    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn error_chain_prints_every_cause_in_order() {
        let e = Outer(Inner(std::io::Error::other("root")));
        assert_eq!(error_chain(&e), "outer: inner: root");
    }
}
