//! `doctor`'s text for a person: at most 80 columns, colour only when asked for.

use super::report::{DeviceKind, Level, NodeReport, Report};
use crate::model::UsbMode;
use anstyle::{AnsiColor, Style};

const WIDTH: usize = 80;

/// The style of each level's word.
pub fn level_style(l: Level) -> Style {
    let colour = |c: AnsiColor| Style::new().fg_color(Some(c.into()));
    match l {
        Level::Ok => colour(AnsiColor::Green),
        Level::Note => colour(AnsiColor::Cyan),
        Level::Warning => colour(AnsiColor::Yellow),
        Level::Problem => colour(AnsiColor::Red).bold(),
    }
}

const BOLD: Style = Style::new().bold();

/// Styles text when colour is on; plain text otherwise.
struct Paint(bool);

impl Paint {
    fn styled(&self, style: Style, text: &str) -> String {
        if self.0 {
            format!("{style}{text}{style:#}")
        } else {
            text.to_string()
        }
    }

    fn level(&self, l: Level, text: &str) -> String {
        self.styled(level_style(l), text)
    }

    fn bold(&self, text: &str) -> String {
        self.styled(BOLD, text)
    }
}

fn level_word(l: Level) -> &'static str {
    match l {
        Level::Ok => "READY",
        Level::Note => "NOTE",
        Level::Warning => "WARNING",
        Level::Problem => "PROBLEM",
    }
}

/// Appends `text` wrapped to the width, first line after `label` (padded to 14
/// columns), the rest indented to match.
fn field(out: &mut String, label: &str, text: &str) {
    let indent = " ".repeat(16);
    let first = format!("  {label:<13} ");
    let opts = textwrap::Options::new(WIDTH)
        .word_splitter(textwrap::WordSplitter::NoHyphenation)
        .initial_indent(&first)
        .subsequent_indent(&indent);
    for line in textwrap::wrap(text, opts) {
        out.push_str(&line);
        out.push('\n');
    }
}

fn node_text(n: &NodeReport) -> String {
    if !n.exists {
        return format!("{}: missing", n.path);
    }
    if !n.char_device {
        return format!("{}: not a character device", n.path);
    }
    let rdev = n.rdev.as_deref().unwrap_or("?");
    let matches = if n.matches {
        "matches the kernel".to_string()
    } else {
        format!("kernel says {}", n.expected.as_deref().unwrap_or("?"))
    };
    format!(
        "{}: char {rdev}, {matches}; mode {}, uid {}, gid {}",
        n.path,
        n.mode.as_deref().unwrap_or("?"),
        n.uid.map_or("?".into(), |u| u.to_string()),
        n.gid.map_or("?".into(), |g| g.to_string()),
    )
}

/// The report for a person, at most 80 columns wide.
pub fn render_text(r: &Report, colour: bool) -> String {
    let p = Paint(colour);
    let mut out = String::new();
    out.push_str(&p.bold(&format!("coral-nfd doctor {}", r.coral_nfd_version)));
    out.push('\n');
    field(
        &mut out,
        "searched",
        &format!(
            "{} PCI functions and {} USB entries under {}; device nodes under {}",
            r.searched.pci_functions,
            r.searched.usb_devices,
            r.searched.sysfs_root,
            r.searched.dev_root
        ),
    );
    let driver = if r.driver.loaded {
        format!(
            "apex {} loaded; gasket {}",
            r.driver.version.as_deref().unwrap_or("(version unknown)"),
            r.driver
                .gasket_version
                .as_deref()
                .unwrap_or("(version unknown)")
        )
    } else {
        "apex not loaded (no /sys/bus/pci/drivers/apex)".into()
    };
    field(&mut out, "driver", &driver);

    for d in &r.devices {
        out.push('\n');
        let kind = match d.kind {
            DeviceKind::Pcie => "PCIe",
            DeviceKind::Usb => "USB",
        };
        let title = format!(
            "{kind} {}  {} [{}:{}]",
            d.id, d.product, d.vendor_id, d.product_id
        );
        for line in textwrap::wrap(&title, WIDTH) {
            out.push_str(&p.bold(&line));
            out.push('\n');
        }
        if d.kind == DeviceKind::Pcie {
            field(
                &mut out,
                "driver",
                d.driver.as_deref().unwrap_or("none bound"),
            );
            if let Some(a) = &d.apex {
                field(&mut out, "class device", a);
            }
            if let Some(v) = &d.driver_version {
                let fw = d.framework_version.as_deref().unwrap_or("?");
                field(&mut out, "versions", &format!("driver {v}, framework {fw}"));
            }
        }
        if let Some(mode) = d.usb_mode {
            let what = match mode {
                UsbMode::Dfu => "dfu (firmware not loaded)",
                UsbMode::App => "app (firmware loaded)",
            };
            field(&mut out, "mode", what);
        }
        if let Some(s) = &d.usb_speed_mbps {
            field(&mut out, "speed", &format!("{s} Mbit/s"));
        }
        if let Some(n) = &d.node {
            field(&mut out, "node", &node_text(n));
        }
        if let Some(s) = &d.status {
            field(&mut out, "status", s);
        }
        if let Some(t) = &d.temperature {
            let trips: Vec<String> = t
                .trip_points_celsius
                .iter()
                .map(|c| format!("{c:.1}"))
                .collect();
            let trips = if trips.is_empty() {
                String::new()
            } else {
                format!(" (throttles at {} °C)", trips.join(" / "))
            };
            let clock = if t.clock_mhz >= 500.0 {
                "500 MHz, full speed".to_string()
            } else {
                format!("{} MHz, throttled", t.clock_mhz)
            };
            field(
                &mut out,
                "temperature",
                &format!("{:.2} °C{trips}; clock {clock}", t.celsius),
            );
        }
        let verdict = p.level(d.verdict, level_word(d.verdict));
        field(&mut out, "verdict", &format!("{verdict} ({})", d.state));
        for f in d.findings.iter().filter(|f| f.level != Level::Ok) {
            let tag = p.level(f.level, level_word(f.level));
            field(&mut out, "", &format!("{tag}: {}", f.message));
            for rem in &f.remedies {
                field(&mut out, "", &format!("-> {rem}"));
            }
        }
    }
    out.push('\n');
    let summary = if r.devices.is_empty() {
        "No Coral Edge TPU found.".to_string()
    } else {
        format!(
            "{} Coral device(s), {} ready, {} with a problem.",
            r.devices.len(),
            r.ready_count,
            r.problem_count
        )
    };
    out.push_str(&p.bold(&summary));
    out.push('\n');
    if !r.warnings.is_empty() {
        out.push_str(&format!(
            "\n{} warning(s) while reading sysfs:\n",
            r.warnings.len()
        ));
        for w in &r.warnings {
            for line in textwrap::wrap(
                w,
                textwrap::Options::new(WIDTH)
                    .initial_indent("  ")
                    .subsequent_indent("    "),
            ) {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{Searched, diagnose};
    use crate::model::{ApexDetails, ApexDevice, Attr, Inventory, PcieFunction, Status, Warnings};

    #[test]
    fn text_fits_80_columns() {
        let inv = Inventory {
            driver_loaded: true,
            pcie: vec![PcieFunction {
                address: "0000:03:00.0".into(),
                driver: Attr::Value("apex".into()),
                apex: Some("apex_0".into()),
            }],
            apex: vec![ApexDevice {
                status: Attr::Value(Status::Lamed),
                temp: Attr::Value(86050),
                details: Some(ApexDetails {
                    trip_points: [Attr::Value(84800), Attr::Value(89800), Attr::Value(94800)],
                    interrupt_counts: true,
                    driver_version: Attr::Value("1.2".into()),
                    framework_version: Attr::Value("1.1.4".into()),
                }),
                ..crate::model::testing::apex(0)
            }],
            ..Inventory::default()
        };
        let searched = Searched {
            sysfs_root: "/sys".into(),
            dev_root: "/dev".into(),
            pci_functions: 1,
            usb_devices: 0,
        };
        let r = diagnose(&inv, searched, Warnings(vec!["x".repeat(200)]));
        assert_eq!(r.exit_code, crate::doctor::EXIT_PROBLEM);
        let text = render_text(&r, false);
        for line in text.lines() {
            assert!(line.chars().count() <= WIDTH, "{line:?}");
        }
        assert!(text.contains("status-lamed"));
        assert!(text.contains("Throttled to 250 MHz"));
        assert!(!text.contains('\x1b'));
        // Problems in bold red (anstyle writes bold and red as two SGR sequences).
        let coloured = render_text(&r, true);
        assert!(
            coloured.contains("\x1b[1m\x1b[31mPROBLEM\x1b[0m"),
            "{coloured:?}"
        );
    }
}
