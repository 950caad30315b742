fn main() -> std::process::ExitCode {
    jsipd::cli::main()
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
