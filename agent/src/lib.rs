//! stallwatch's agent: probes, cgroup readers, identity (cgroup paths and
//! the container runtime), collection, exposition and the JSON API, and the
//! `top` and `recommend` tools over them. The `agent` binary (`main.rs`) is
//! the command line over it.

pub mod api;
pub mod block_devices;
pub mod btf;
pub mod cgroup_mount;
pub mod cgroup_tree;
pub mod cgroupfs;
pub mod cli;
pub mod collector;
pub mod cri;
pub mod exposition;
pub mod http;
pub mod http_client;
pub mod identity;
pub mod labels;
pub mod node;
pub mod privileges;
pub mod probes;
pub mod recommend;
pub mod startup;
pub mod top;
pub mod tracefs;
