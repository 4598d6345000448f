//! coral-nfd: discover Coral Edge TPUs from sysfs and describe them to Node Feature
//! Discovery.
//!
//! Three jobs, kept apart, with imports flowing one way:
//! - **discover**: [`root`] (the one door to the host filesystem) and [`parse`] (pure
//!   attribute parsers) feed [`scan`], which fills in the plain data of [`model`].
//! - **compose**: pure functions of the model: [`state`] (readiness), [`features`]
//!   (NFD features), [`label`] (Kubernetes syntax), [`render`] (the feature file's
//!   text), [`changes`] (what changed between two versions, for the log), [`rules`]
//!   (NodeFeatureRules for a prefix), [`metrics`] (the Prometheus text), and for
//!   people [`doctor`] and [`frigate`].
//! - **output**: [`output`] (stdout, atomic file), [`labeler`] (the pipeline, once or
//!   as a daemon), [`daemon`] (the loop), [`events`] (signals) and [`hotplug`]
//!   (inotify), [`snapshot`], [`deviceplugin`] (the kubelet device plugin), [`serve`]
//!   (the `/metrics` endpoint); [`log`] says everything on stderr.
//!
//! [`cli`] parses the command line and dispatches to [`labeler`] or [`commands`].

pub mod changes;
pub mod cli;
pub mod commands;
pub mod daemon;
pub mod deviceplugin;
pub mod doctor;
pub mod events;
pub mod features;
pub mod frigate;
pub mod hotplug;
pub mod label;
pub mod labeler;
pub mod log;
pub mod metrics;
pub mod model;
pub mod origin;
pub mod output;
pub mod parse;
pub mod render;
pub mod root;
pub mod rules;
pub mod scan;
pub mod serve;
pub mod snapshot;
pub mod state;
