//! The subcommands for people: `doctor`, `frigate-config`, `snapshot`. Each is the
//! same discovery as the labeler, then its own presentation. Errors go back to
//! [`crate::cli::run`], which prints them.

use crate::doctor::{self, Searched};
use crate::frigate;
use crate::log::{self, Fatal};
use crate::root::Root;
use crate::scan::{self, Depth};
use crate::snapshot;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

/// `frigate-config` exit code when no device is ready.
const EXIT_NONE_READY: u8 = 3;

fn print(text: &str) -> Result<(), Fatal> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Fatal::failure(format!("cannot write to stdout: {e}")))
}

pub fn doctor(sys: &Root, dev: &Root, json: bool) -> Result<ExitCode, Fatal> {
    let scan = scan::discover_to(sys, dev, Depth::Doctor);
    let searched = Searched {
        sysfs_root: sys.path().display().to_string(),
        dev_root: dev.path().display().to_string(),
        pci_functions: scan.inventory.pci_scanned,
        usb_devices: scan.inventory.usb_scanned,
    };
    let report = doctor::diagnose(&scan.inventory, searched, scan.warnings);
    let text = if json {
        serde_json::to_string_pretty(&report)
            .map_err(|e| Fatal::failure(format!("cannot encode the report: {e}")))?
            + "\n"
    } else {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        doctor::render_text(&report, colour)
    };
    print(&text)?;
    Ok(ExitCode::from(report.exit_code))
}

pub fn frigate_config(sys: &Root, dev: &Root) -> Result<ExitCode, Fatal> {
    let scan = scan::discover(sys, dev);
    log::warnings(&scan.warnings);
    let config = frigate::detectors(&scan.inventory);
    print(&config.yaml)?;
    Ok(if config.detectors == 0 {
        ExitCode::from(EXIT_NONE_READY)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn snapshot(sys: &Root, dev: &Root, output: &Path, force: bool) -> Result<ExitCode, Fatal> {
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
