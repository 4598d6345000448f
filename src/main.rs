fn main() -> std::process::ExitCode {
    coral_nfd::cli::run()
}

/// Whether stdout is closed must be seen before Rust's runtime opens `/dev/null` in its
/// place (see `note_stdout_at_start`): `.init_array` holds functions that the C startup
/// code (the dynamic loader, or glibc's static start for the crt-static build) calls
/// before `main`, and before the runtime's own set-up.
///
/// SAFETY (of placing it in `.init_array`): the section holds pointers to functions with
/// the C calling convention, which glibc calls with (argc, argv, envp); a function that
/// takes no arguments ignores them under that convention (std's own `.init_array`
/// entry relies on the same). The function runs once, on the only thread, and does
/// nothing that needs the runtime: one `fcntl` system call and an atomic store.
#[used]
#[unsafe(link_section = ".init_array")]
static NOTE_STDOUT: extern "C" fn() = coral_nfd::output::note_stdout_at_start;
