//! The subcommands for people: `doctor`, `frigate-config`, `snapshot`. Each is the
//! same discovery as the labeler, then its own presentation.

use crate::doctor::{self, Searched};
use crate::frigate;
use crate::inventory::{self, Depth};
use crate::root::Root;
use crate::snapshot;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

/// `frigate-config` exit code when no device is ready.
const EXIT_NONE_READY: u8 = 3;

fn print(text: &str) -> Result<(), ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| {
            eprintln!("coral-nfd: error: cannot write to stdout: {e}");
            ExitCode::from(1)
        })
}

pub fn doctor(sys: &Root, dev: &Root, json: bool) -> ExitCode {
    let scan = inventory::discover_to(sys, dev, Depth::Doctor);
    let searched = Searched {
        sysfs_root: sys.path().display().to_string(),
        dev_root: dev.path().display().to_string(),
        pci_functions: scan.inventory.pci_scanned,
        usb_devices: scan.inventory.usb_scanned,
    };
    let report = doctor::diagnose(&scan.inventory, searched, scan.warnings.0);
    let text = if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("coral-nfd: error: cannot encode the report: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        doctor::render_text(&report, colour)
    };
    match print(&text) {
        Ok(()) => ExitCode::from(report.exit_code),
        Err(code) => code,
    }
}

pub fn frigate_config(sys: &Root, dev: &Root) -> ExitCode {
    let scan = inventory::discover(sys, dev);
    crate::output::print_warnings(&scan.warnings.0);
    let config = frigate::detectors(&scan.inventory);
    if let Err(code) = print(&config.yaml) {
        return code;
    }
    if config.detectors == 0 {
        ExitCode::from(EXIT_NONE_READY)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn snapshot(sys: &Root, dev: &Root, output: &Path, force: bool) -> ExitCode {
    match snapshot::snapshot(sys, dev, output, force) {
        Ok(s) => {
            eprintln!(
                "coral-nfd: snapshot of {} in {}: {} files, {} links, {} device nodes{}",
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
            );
            if !s.skipped.is_empty() {
                eprintln!(
                    "coral-nfd: {} entries left out (listed in README)",
                    s.skipped.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("coral-nfd: error: snapshot: {e}");
            ExitCode::from(1)
        }
    }
}
