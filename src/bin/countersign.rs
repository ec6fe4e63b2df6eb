//! The `countersign` CLI: see `countersign --help`.

fn main() -> std::process::ExitCode {
    countersign::cli::main()
}
