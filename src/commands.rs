//! The subcommands for people: `doctor`, `frigate-config`, `snapshot`. Each is the
//! same discovery as the labeler, then its own presentation. Errors go back to
//! [`crate::cli::run`], which prints them.

use crate::doctor::{self, Searched};
use crate::frigate;
use crate::log::{self, Fatal};
use crate::output;
use crate::root::Root;
use crate::scan::{self, Depth};
use crate::snapshot;
use std::path::Path;
use std::process::ExitCode;

/// `frigate-config` exit code when no device is ready.
const EXIT_NONE_READY: u8 = 3;
/// `doctor` and `frigate-config` exit code when stdout cannot take the output (a closed
/// pipe, `>&-`): their 1 and 3 say something about the hardware, which this does not.
pub const EXIT_NO_OUTPUT: u8 = 4;

/// Prints `text` whole; a failure ends the command with exit `code`.
fn print_or(text: &str, code: u8) -> Result<(), Fatal> {
    output::to_stdout(text).map_err(|e| Fatal {
        message: format!("cannot write to stdout: {e}"),
        code,
    })
}

fn print(text: &str) -> Result<(), Fatal> {
    print_or(text, crate::log::EXIT_FAILURE)
}

pub fn doctor(sys: &Root, dev: &Root, json: bool) -> Result<ExitCode, Fatal> {
    scan::check_roots(sys, dev)?;
    let scan = scan::discover_to(sys, dev, Depth::Doctor);
    let searched = Searched {
        sysfs_root: sys.path().display().to_string(),
        dev_root: dev.path().display().to_string(),
        pci_functions: scan.inventory.pci_scanned,
        usb_devices: scan.inventory.usb_scanned,
    };
    let report =
        doctor::diagnose(&scan.inventory, searched, scan.warnings).incomplete(scan.unreadable);
    let text = if json {
        serde_json::to_string_pretty(&report)
            .map_err(|e| Fatal::failure(format!("cannot encode the report: {e}")))?
            + "\n"
    } else {
        // anstream's choice: a terminal, NO_COLOR unset or empty (no-color.org), TERM
        // not `dumb`, CLICOLOR / CLICOLOR_FORCE respected.
        let colour =
            anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never;
        doctor::render_text(&report, colour)
    };
    print_or(&text, EXIT_NO_OUTPUT)?;
    Ok(ExitCode::from(report.exit_code))
}

pub fn frigate_config(sys: &Root, dev: &Root) -> Result<ExitCode, Fatal> {
    scan::check_roots(sys, dev)?;
    let scan = scan::discover(sys, dev);
    log::warnings(&scan.warnings);
    if let Some(why) = scan.incomplete() {
        // A config from part of the hardware could number the TPUs wrongly.
        return Err(Fatal::failure(format!("{why}; no config printed")));
    }
    let config = frigate::detectors(&scan.inventory);
    log::warnings(&config.warnings);
    print_or(&config.yaml, EXIT_NO_OUTPUT)?;
    if config.detectors == 0 {
        // The YAML says so in a comment; someone piping it into a file sees this.
        log::warning(
            "no Coral TPU is ready: the config has no detectors (Frigate keeps its CPU \
             detector); `coral-nfd doctor` says why",
        );
        return Ok(ExitCode::from(EXIT_NONE_READY));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn snapshot(sys: &Root, dev: &Root, output: &Path, force: bool) -> Result<ExitCode, Fatal> {
    scan::check_roots(sys, dev)?;
    let s = snapshot::snapshot(sys, dev, output, force)
        .map_err(|e| Fatal::failure(format!("snapshot: {e}")))?;
    log::info(format_args!(
        "snapshot of {} in {}: {} files, {} links, {} device nodes{}",
        sys.path().display(),
        output.display(),
        s.files,
        s.links,
        s.nodes,
        if s.nodes_recreated {
            ""
        } else {
            " (not recreated: mknod refused)"
        }
    ));
    if !s.skipped.is_empty() {
        log::info(format_args!(
            "{} entries left out (listed in README)",
            s.skipped.len()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn completions(
    shell: clap_complete::Shell,
    cmd: &mut clap::Command,
) -> Result<ExitCode, Fatal> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, cmd, "coral-nfd", &mut buf);
    print(&String::from_utf8_lossy(&buf))?;
    Ok(ExitCode::SUCCESS)
}

pub fn man(cmd: clap::Command) -> Result<ExitCode, Fatal> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut buf)
        .map_err(|e| Fatal::failure(format!("cannot render the manual page: {e}")))?;
    print(&String::from_utf8_lossy(&buf))?;
    Ok(ExitCode::SUCCESS)
}

pub fn rules(prefix: &crate::label::Prefix, extended_resources: bool) -> Result<ExitCode, Fatal> {
    print(&crate::rules::node_feature_rules(
        prefix,
        extended_resources,
    ))?;
    Ok(ExitCode::SUCCESS)
}
