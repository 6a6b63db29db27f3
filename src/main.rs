fn main() -> std::process::ExitCode {
    trafficjam::cli::main()
}
