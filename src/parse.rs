//! Parsers for the sysfs attribute formats coral-nfd reads. Pure functions over bytes:
//! whatever a file holds, they return a value or a message saying what was expected.
//! (Named `parse`, not `attr`: [`crate::model::Attr`] is the value they end up in.)

use crate::model::Status;

/// What a malformed attribute held, for a warning: escaped, and cut short.
pub fn describe(bytes: &[u8]) -> String {
    const SHOWN: usize = 40;
    let mut s: String = bytes
        .iter()
        .take(SHOWN)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if bytes.len() > SHOWN {
        s.push_str("...");
    }
    format!("\"{s}\"")
}

fn trimmed(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

fn expected(what: &str, bytes: &[u8]) -> String {
    format!("expected {what}, found {}", describe(bytes))
}

/// A PCI or USB ID: `0x1ac1` (PCI `vendor`/`device`) or `1a6e` (USB `idVendor`).
pub fn hex_id(bytes: &[u8]) -> Result<u16, String> {
    let t = trimmed(bytes);
    let digits = t
        .strip_prefix(b"0x")
        .or_else(|| t.strip_prefix(b"0X"))
        .unwrap_or(t);
    if digits.is_empty() || digits.len() > 4 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(expected("a hexadecimal ID like 0x1ac1", bytes));
    }
    // Only ASCII hex digits remain, at most four: this parse cannot fail or overflow.
    Ok(digits.iter().fold(0u16, |acc, d| {
        acc * 16 + (*d as char).to_digit(16).unwrap_or(0) as u16
    }))
}

fn decimal_u32(t: &[u8]) -> Option<u32> {
    if t.is_empty() || t.len() > 10 || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(t).ok()?.parse().ok()
}

/// A device number as the kernel writes it in `dev` files: `120:0`.
pub fn dev_number(bytes: &[u8]) -> Result<(u32, u32), String> {
    let t = trimmed(bytes);
    let mut parts = t.splitn(2, |b| *b == b':');
    match (
        parts.next().and_then(decimal_u32),
        parts.next().and_then(decimal_u32),
    ) {
        (Some(major), Some(minor)) if minor < (1 << 20) && major < (1 << 12) => Ok((major, minor)),
        _ => Err(expected("a device number like 120:0", bytes)),
    }
}

/// A small unsigned decimal: USB `busnum`, `devnum`.
pub fn small_uint(bytes: &[u8]) -> Result<u32, String> {
    match decimal_u32(trimmed(bytes)) {
        Some(n) if n <= 9999 => Ok(n),
        _ => Err(expected("a decimal number", bytes)),
    }
}

/// An unsigned decimal of up to 32 bits: `temp_poll_interval` (milliseconds).
pub fn uint(bytes: &[u8]) -> Result<u32, String> {
    decimal_u32(trimmed(bytes)).ok_or_else(|| expected("a decimal number", bytes))
}

/// A 0/1 switch: `hw_temp_warn2_en`, `is_device_owned`.
pub fn flag(bytes: &[u8]) -> Result<bool, String> {
    match trimmed(bytes) {
        b"0" => Ok(false),
        b"1" => Ok(true),
        _ => Err(expected("0 or 1", bytes)),
    }
}

/// A PCI function's `numa_node`: `-1` (none known) or a node number.
pub fn numa_node(bytes: &[u8]) -> Result<Option<u32>, String> {
    match trimmed(bytes) {
        b"-1" => Ok(None),
        t => match decimal_u32(t) {
            // Linux has at most 1024 NUMA nodes (CONFIG_NODES_SHIFT <= 10).
            Some(n) if n < 1024 => Ok(Some(n)),
            _ => Err(expected("a NUMA node number or -1", bytes)),
        },
    }
}

pub fn status(bytes: &[u8]) -> Result<Status, String> {
    let t = trimmed(bytes);
    Ok(match t {
        b"ALIVE" => Status::Alive,
        b"LAMED" => Status::Lamed,
        b"DEAD" => Status::Dead,
        b"DRIVER_EXITING" => Status::DriverExiting,
        _ if !t.is_empty()
            && t.len() <= 32
            && t[0].is_ascii_uppercase()
            && t.iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_') =>
        {
            // Only ASCII bytes remain, so this is valid UTF-8.
            Status::Other(String::from_utf8_lossy(t).into_owned())
        }
        _ => return Err(expected("a status word like ALIVE", bytes)),
    })
}

/// A temperature in millidegrees Celsius (`temp`, `trip_point0_temp`, ...).
pub fn millicelsius(bytes: &[u8]) -> Result<i64, String> {
    let t = trimmed(bytes);
    let (neg, digits) = match t.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, t),
    };
    match decimal_u32(digits) {
        // Anything beyond +-1000 C is not a temperature reading.
        Some(v) if v <= 1_000_000 => Ok(if neg { -(v as i64) } else { v as i64 }),
        _ => Err(expected("a temperature in millidegrees like 49300", bytes)),
    }
}

/// A module or driver version (`/sys/module/apex/version`): printable ASCII, no spaces.
/// Whether it can be a label value is the composer's decision.
pub fn version(bytes: &[u8]) -> Result<String, String> {
    let t = trimmed(bytes);
    if t.is_empty() || t.len() > 64 || !t.iter().all(u8::is_ascii_graphic) {
        return Err(expected("a version like 1.2", bytes));
    }
    Ok(String::from_utf8_lossy(t).into_owned())
}

/// USB `speed` in Mbit/s: `1.5`, `12`, `480`, `5000`, `10000`, `20000`.
pub fn usb_speed(bytes: &[u8]) -> Result<String, String> {
    let t = trimmed(bytes);
    let ok = !t.is_empty()
        && t.len() <= 8
        && t[0].is_ascii_digit()
        && t[t.len() - 1].is_ascii_digit()
        && t.iter().all(|b| b.is_ascii_digit() || *b == b'.');
    if !ok {
        return Err(expected("a speed in Mbit/s like 5000", bytes));
    }
    Ok(String::from_utf8_lossy(t).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids() {
        assert_eq!(hex_id(b"0x1ac1\n"), Ok(0x1ac1));
        assert_eq!(hex_id(b"1a6e\n"), Ok(0x1a6e));
        assert_eq!(hex_id(b"0X089A"), Ok(0x089a));
        for bad in [
            &b""[..],
            b"0x",
            b"\n",
            b"0x1ac1f",
            b"zz",
            b"\xff\xfe",
            b"0x-1",
            b"1 2",
        ] {
            assert!(hex_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dev_numbers() {
        assert_eq!(dev_number(b"120:0\n"), Ok((120, 0)));
        assert_eq!(dev_number(b"189:258"), Ok((189, 258)));
        for bad in [
            &b""[..],
            b"120",
            b"120:",
            b":0",
            b"a:b",
            b"120:0:1",
            b"-1:0",
            b"99999999999:0",
        ] {
            assert!(dev_number(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(status(b"ALIVE\n"), Ok(Status::Alive));
        assert_eq!(status(b"LAMED"), Ok(Status::Lamed));
        assert_eq!(status(b"DRIVER_EXITING\n"), Ok(Status::DriverExiting));
        assert_eq!(status(b"NEW_STATE"), Ok(Status::Other("NEW_STATE".into())));
        for bad in [&b""[..], b"alive", b"ALIVE NOW", b"\x00", b"_X"] {
            assert!(status(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn temperatures() {
        assert_eq!(millicelsius(b"49300\n"), Ok(49300));
        assert_eq!(
            millicelsius(b"-89700\n"),
            Ok(crate::model::TEMP_NOT_ANSWERING)
        );
        for bad in [&b""[..], b"-", b"4.9", b"99999999999", b"--1", b"+1"] {
            assert!(millicelsius(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn versions_and_speeds() {
        assert_eq!(version(b"1.2\n"), Ok("1.2".into()));
        assert!(version(b"1.2 beta").is_err());
        assert!(version(b"").is_err());
        assert_eq!(usb_speed(b"5000\n"), Ok("5000".into()));
        assert_eq!(usb_speed(b"1.5"), Ok("1.5".into()));
        assert!(usb_speed(b"fast").is_err());
        assert!(usb_speed(b".5").is_err());
    }

    #[test]
    fn switches_numbers_and_numa_nodes() {
        assert_eq!(flag(b"1\n"), Ok(true));
        assert_eq!(flag(b"0"), Ok(false));
        assert!(flag(b"2").is_err() && flag(b"").is_err() && flag(b"true").is_err());
        assert_eq!(uint(b"5000\n"), Ok(5000));
        assert!(uint(b"-1").is_err() && uint(b"99999999999").is_err());
        assert_eq!(numa_node(b"-1\n"), Ok(None));
        assert_eq!(numa_node(b"1\n"), Ok(Some(1)));
        for bad in [&b""[..], b"-2", b"1024", b"x"] {
            assert!(numa_node(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn describe_escapes_and_truncates() {
        assert_eq!(describe(b"a\n\xff"), "\"a\\n\\xff\"");
        assert!(describe(&[b'x'; 100]).ends_with("...\""));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Every parser, on any bytes: a value or a message, never a panic; and a
        /// message always quotes what it found, escaped, so it is printable.
        fn total<T: std::fmt::Debug>(r: Result<T, String>) {
            if let Err(m) = r {
                assert!(m.starts_with("expected "), "{m}");
                assert!(m.chars().all(|c| !c.is_control()), "{m:?}");
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn no_input_makes_a_parser_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                total(hex_id(&bytes));
                total(dev_number(&bytes));
                total(small_uint(&bytes));
                total(status(&bytes));
                total(millicelsius(&bytes));
                total(version(&bytes));
                total(usb_speed(&bytes));
                total(uint(&bytes));
                total(flag(&bytes));
                total(numa_node(&bytes));
                prop_assert!(describe(&bytes).len() <= 2 + 40 * 4 + 3);
            }

            #[test]
            fn hex_ids_round_trip(v: u16, prefix in prop_oneof![Just(""), Just("0x")], nl: bool) {
                let text = format!("{prefix}{v:04x}{}", if nl { "\n" } else { "" });
                prop_assert_eq!(hex_id(text.as_bytes()), Ok(v));
            }

            #[test]
            fn dev_numbers_round_trip(major in 0u32..4096, minor in 0u32..(1 << 20)) {
                prop_assert_eq!(dev_number(format!("{major}:{minor}\n").as_bytes()), Ok((major, minor)));
            }

            #[test]
            fn temperatures_round_trip(t in -1_000_000i64..=1_000_000) {
                prop_assert_eq!(millicelsius(format!("{t}\n").as_bytes()), Ok(t));
            }

            #[test]
            fn small_numbers_round_trip(n in 0u32..=9999) {
                prop_assert_eq!(small_uint(format!("{n}\n").as_bytes()), Ok(n));
            }

            #[test]
            fn accepted_text_is_clean(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
                // What the composer may put in a feature line: printable ASCII only.
                for s in [version(&bytes).ok(), usb_speed(&bytes).ok(),
                          status(&bytes).ok().map(|s| s.as_str().to_string())].into_iter().flatten() {
                    prop_assert!(!s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()), "{:?}", s);
                }
            }
        }
    }
}
