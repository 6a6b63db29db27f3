#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    trafficjam::cli::main()
}
