//! The ABI shared by stallwatch's kernel probes and its userspace agent.
//!
//! Everything both sides must agree on is defined here, once: map and global
//! names, `#[repr(C)]` map keys and values, and the latency histogram layout.
//! The library is `no_std` so the probes (built for `bpfel-unknown-none`) can
//! use it; the `user` feature adds the `aya::Pod` impls userspace needs to read
//! the maps and to override the globals.
#![cfg_attr(not(test), no_std)]

pub mod disk;
pub mod histogram;
pub mod map_full;
pub mod reclaim;
pub mod runqueue;
pub mod tcp;

/// A cgroup v2 id: the inode number of the cgroup's directory in cgroup2,
/// as returned by `bpf_get_current_cgroup_id()`.
pub type CgroupId = u64;
