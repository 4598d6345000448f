//! `coral-nfd doctor`: for a person, why each TPU is or is not ready and what to do.
//! Three parts: [`diagnose`] (findings from the model, pure), [`report`] (the JSON
//! document's types, which `--json` prints with serde) and [`text`] (the same report
//! for a terminal).

mod diagnose;
mod findings;
mod report;
mod text;

pub use diagnose::{diagnose, pci_product_name, usb_product_name};
pub use findings::temperature;
pub use report::{
    ClassDeviceReport, DeviceKind, DeviceReport, DriverReport, EXIT_ALL_READY, EXIT_NO_DEVICE,
    EXIT_PROBLEM, Finding, Level, NodeReport, Report, SCHEMA_VERSION, Searched, Temperature,
};
pub use text::render_text;
