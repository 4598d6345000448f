fn main() -> std::process::ExitCode {
    coral_nfd::cli::run()
}
