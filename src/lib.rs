//! coral-nfd: discover Coral Edge TPUs from sysfs and describe them to Node Feature
//! Discovery.
//!
//! Three jobs, kept apart: **discover** ([`root`], [`pci`], [`apex`], [`usb`] into
//! [`inventory`]), **compose** ([`state`], [`features`], [`label`]: pure functions of
//! the inventory), **output** ([`output`], [`daemon`]).

pub mod apex;
pub mod attr;
pub mod cli;
pub mod commands;
pub mod daemon;
pub mod doctor;
pub mod features;
pub mod frigate;
pub mod hotplug;
pub mod inventory;
pub mod label;
pub mod output;
pub mod pci;
pub mod root;
pub mod snapshot;
pub mod state;
pub mod usb;
