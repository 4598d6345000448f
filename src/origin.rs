//! Where an option's value came from, for error messages. In a DaemonSet the options are
//! set through environment variables, and an error that names `--expiry` sends the
//! reader looking for a flag nobody typed: such errors name the variable instead.

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// Every flag an environment variable can set, with its variable: the `env =` of the
/// flags in `cli.rs` (a test there keeps the two equal).
pub const VARIABLES: [(&str, &str); 8] = [
    ("--sysfs-root", "CORAL_NFD_SYSFS_ROOT"),
    ("--dev-root", "CORAL_NFD_DEV_ROOT"),
    ("--label-prefix", "CORAL_NFD_LABEL_PREFIX"),
    ("--output-file", "CORAL_NFD_OUTPUT_FILE"),
    ("--sleep-interval", "CORAL_NFD_SLEEP_INTERVAL"),
    ("--expiry", "CORAL_NFD_EXPIRY"),
    ("--log-format", "CORAL_NFD_LOG_FORMAT"),
    ("--metrics-address", "CORAL_NFD_METRICS_ADDRESS"),
];

/// The variable that sets `flag`, if any.
fn variable(flag: &str) -> Option<&'static str> {
    VARIABLES.iter().find(|(f, _)| *f == flag).map(|(_, v)| *v)
}

/// The variable `flag`'s value came from: the variable is set and the flag was not
/// given on the command line (which clap prefers).
fn from_environment(flag: &str) -> Option<&'static str> {
    let var = variable(flag)?;
    let on_command_line = std::env::args_os().skip(1).any(|w| {
        let w = w.to_string_lossy();
        w == flag || w.starts_with(&format!("{flag}="))
    });
    (!on_command_line && std::env::var_os(var).is_some()).then_some(var)
}

/// How an error names `flag`: `CORAL_NFD_EXPIRY (the environment's --expiry)` when the
/// value came from there, else the flag.
pub fn flag_name(flag: &str) -> String {
    match from_environment(flag) {
        Some(var) => format!("{var} (the environment's {flag})"),
        None => flag.to_string(),
    }
}

/// A clap error about a bad value that came from an environment variable, reworded to
/// name the variable (`cmd` makes the new error, so it is rendered like the others).
pub fn name_the_variable(cmd: &clap::Command, e: clap::Error) -> clap::Error {
    if !matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return e;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return e;
    };
    let flag = arg.split_whitespace().next().unwrap_or_default();
    let Some(var) = from_environment(flag) else {
        return e;
    };
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let detail = first.strip_prefix("error: ").unwrap_or(first).replace(
        &format!("for '{arg}'"),
        &format!("in {var} (the environment's {flag})"),
    );
    cmd.clone().error(ErrorKind::ValueValidation, detail)
}
