//! `doctor`'s text for a person: at most 80 columns, colour only when asked for.

use super::report::{DeviceKind, Finding, Level, NodeReport, Report};
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

/// `text` wrapped to [`WIDTH`] columns, the first line after `first`, the others after
/// `rest`. Words are broken only at spaces; a word too long for a line (a path) is
/// broken after a `/`, and only one with no `/` to break at is cut anywhere.
fn wrap(text: &str, first: &str, rest: &str) -> Vec<String> {
    use textwrap::WordSeparator;
    use textwrap::core::{Word, break_words, display_width};
    use textwrap::wrap_algorithms::wrap_first_fit;
    let (w1, w2) = (display_width(first), display_width(rest));
    let avail = WIDTH.saturating_sub(w1.max(w2)).max(1);
    let mut frags: Vec<Word> = Vec::new();
    for w in WordSeparator::AsciiSpace.find_words(text) {
        if w.width <= avail {
            frags.push(w);
            continue;
        }
        let mut start = 0;
        let cuts = w.word.match_indices('/').map(|(i, _)| i + 1);
        for end in cuts.chain(std::iter::once(w.word.len())) {
            if end <= start {
                continue;
            }
            let mut piece = Word::from(&w.word[start..end]);
            piece.whitespace = if end == w.word.len() {
                w.whitespace
            } else {
                ""
            };
            frags.push(piece);
            start = end;
        }
    }
    let frags = break_words(frags, avail);
    let widths = [(WIDTH - w1) as f64, (WIDTH - w2) as f64];
    wrap_first_fit(&frags, &widths)
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let mut s = String::from(if i == 0 { first } else { rest });
            for (j, f) in line.iter().enumerate() {
                s.push_str(f.word);
                s.push_str(if j + 1 < line.len() {
                    f.whitespace
                } else {
                    f.penalty
                });
            }
            s
        })
        .collect()
}

/// Appends `text` wrapped to the width, first line after `label` (padded to 14
/// columns), the rest indented to match.
fn field(out: &mut String, label: &str, text: &str) {
    for line in wrap(text, &format!("  {label:<13} "), &" ".repeat(16)) {
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// Every finding that is not `ok`, with its remedies.
fn findings(out: &mut String, p: &Paint, findings: &[Finding]) {
    for f in findings.iter().filter(|f| f.level != Level::Ok) {
        let tag = p.level(f.level, level_word(f.level));
        field(out, "", &format!("{tag}: {}", f.message));
        for rem in &f.remedies {
            field(out, "", &format!("-> {rem}"));
        }
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
        for line in wrap(&title, "", "") {
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
            if let Some(e) = &d.edgetpu_device {
                field(
                    &mut out,
                    "edgetpu",
                    &format!("{e} (libedgetpu's numbering: Frigate's device: \"{e}\")"),
                );
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
        findings(&mut out, &p, &d.findings);
    }
    for c in &r.class_devices {
        out.push('\n');
        let title = format!("Class device {} (no Coral PCIe function)", c.name);
        out.push_str(&p.bold(&title));
        out.push('\n');
        let verdict = super::diagnose::worst(&c.findings);
        field(
            &mut out,
            "verdict",
            &format!(
                "{} (apex_N.ready=false)",
                p.level(verdict, level_word(verdict))
            ),
        );
        findings(&mut out, &p, &c.findings);
    }
    out.push('\n');
    let mut summary = if r.devices.is_empty() && r.class_devices.is_empty() {
        "No Coral Edge TPU found".to_string()
    } else {
        format!(
            "{} Coral device(s), {} ready, {} with a problem",
            r.devices.len(),
            r.ready_count,
            r.problem_count
        )
    };
    summary.push_str(if r.unreadable.is_empty() {
        "."
    } else {
        ", but the scan is incomplete: there may be more."
    });
    out.push_str(&p.bold(&summary));
    out.push('\n');
    if !r.next_steps.is_empty() {
        out.push_str("\nNext steps:\n");
        for s in &r.next_steps {
            for line in wrap(s, "  - ", "    ") {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    if !r.unreadable.is_empty() {
        let head = format!(
            "Scan incomplete: {} path(s) the scan must read could not be read, so devices \
             may be missing above (run as root, or give the container the host's sysfs):",
            r.unreadable.len()
        );
        out.push('\n');
        for line in wrap(&head, "", "") {
            out.push_str(&p.level(Level::Problem, &line));
            out.push('\n');
        }
        for u in &r.unreadable {
            for line in wrap(u, "  ", "    ") {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    if !r.warnings.is_empty() {
        out.push_str(&format!(
            "\n{} warning(s) while reading sysfs:\n",
            r.warnings.len()
        ));
        for w in &r.warnings {
            for line in wrap(w, "  ", "    ") {
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
                numa_node: Attr::Absent,
            }],
            apex: vec![ApexDevice {
                status: Attr::Value(Status::Lamed),
                temp: Attr::Value(86050),
                details: Some(ApexDetails {
                    trip_points: [Attr::Value(84800), Attr::Value(89800), Attr::Value(94800)],
                    interrupt_counts: true,
                    framework_version: Attr::Value("1.1.4".into()),
                    ..ApexDetails::default()
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

    #[test]
    fn long_paths_break_after_a_slash() {
        let path = "/sys/devices/pci0000:00/0000:00:1c.4/0000:03:00.0/apex/apex_0/\
                    a_rather_long_attribute_name/and/more/and/more/segments/to/wrap";
        let text = format!("cannot read {path}: Permission denied");
        let lines = wrap(&text, "  ", "    ");
        assert!(lines.len() >= 2, "{lines:?}");
        for l in &lines {
            assert!(display(l) <= WIDTH, "{l:?}");
        }
        // Put back together, the lines are the text: nothing cut, nothing added.
        let joined: String = lines
            .iter()
            .map(|l| l.trim_start())
            .collect::<Vec<_>>()
            .join("");
        assert_eq!(joined.replace(' ', ""), text.replace(' ', ""));
        // Each break is at a space or right after a '/'.
        for pair in lines.windows(2) {
            let end = pair[0].trim_end().rsplit(' ').next().unwrap();
            let start = pair[1].trim_start().split(' ').next().unwrap();
            assert!(
                end.ends_with('/') || text.contains(&format!("{end} {start}")),
                "{end:?} | {start:?}"
            );
        }
    }

    fn display(s: &str) -> usize {
        textwrap::core::display_width(s)
    }
}
