fn main() -> std::process::ExitCode {
    jsipd::cli::main()
}
