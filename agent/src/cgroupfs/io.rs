//! Block I/O totals per device: `io.stat` (v2),
//! `blkio.throttle.io_service_bytes` and `blkio.throttle.io_serviced` (v1).

use super::{Errors, parse};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceIo {
    pub major: u32,
    pub minor: u32,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

fn entry(devices: &mut Vec<DeviceIo>, (major, minor): (u32, u32)) -> &mut DeviceIo {
    let index = match devices
        .iter()
        .position(|d| d.major == major && d.minor == minor)
    {
        Some(i) => i,
        None => {
            devices.push(DeviceIo {
                major,
                minor,
                ..DeviceIo::default()
            });
            devices.len() - 1
        }
    };
    &mut devices[index]
}

/// v2 `io.stat`: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`.
pub fn stat_v2(text: &str, devices: &mut Vec<DeviceIo>, errors: &mut Errors) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (dev, rest) = line.split_once(' ').unwrap_or((line, ""));
        // The kernel prints `(unknown)` for a device it cannot name, and a
        // bare `MAJ:MIN` for one without I/O yet: neither is a sample.
        if dev == "(unknown)" || rest.trim().is_empty() {
            continue;
        }
        let Some(dev) = parse::device(dev) else {
            errors.malformed("io.stat");
            continue;
        };
        let device = entry(devices, dev);
        for (key, value) in parse::pairs(rest) {
            let Ok(v) = value.parse::<u64>() else {
                continue;
            };
            match key {
                "rbytes" => device.read_bytes = v,
                "wbytes" => device.write_bytes = v,
                "rios" => device.reads = v,
                "wios" => device.writes = v,
                _ => {}
            }
        }
    }
}

/// v1 `blkio.throttle.io_service_bytes` (`bytes`) or `…io_serviced` (ops):
/// `8:0 Read 123` lines and a final `Total N`.
pub fn throttle_v1(text: &str, bytes: bool, devices: &mut Vec<DeviceIo>, errors: &mut Errors) {
    let file = if bytes {
        "blkio.throttle.io_service_bytes"
    } else {
        "blkio.throttle.io_serviced"
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let (Some(first), Some(second)) = (fields.next(), fields.next()) else {
            errors.malformed(file);
            continue;
        };
        if first == "Total" {
            continue;
        }
        let (Some(dev), Some(Ok(v))) = (parse::device(first), fields.next().map(str::parse::<u64>))
        else {
            errors.malformed(file);
            continue;
        };
        let device = entry(devices, dev);
        match (second, bytes) {
            ("Read", true) => device.read_bytes = v,
            ("Write", true) => device.write_bytes = v,
            ("Read", false) => device.reads = v,
            ("Write", false) => device.writes = v,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_io_stat_per_device() {
        let mut devices = Vec::new();
        let mut errors = Errors::default();
        stat_v2(
            "254:0 rbytes=1048576 wbytes=2097152 rios=10 wios=20 dbytes=0 dios=0\n8:0 rbytes=5 wbytes=6 rios=7 wios=8 dbytes=0 dios=0\n",
            &mut devices,
            &mut errors,
        );
        assert_eq!(devices.len(), 2);
        assert_eq!(
            devices[0],
            DeviceIo {
                major: 254,
                minor: 0,
                read_bytes: 1048576,
                write_bytes: 2097152,
                reads: 10,
                writes: 20
            }
        );
        assert_eq!(errors.total(), 0);
    }

    #[test]
    fn v1_throttle_files_merge_into_one_device() {
        let mut devices = Vec::new();
        let mut errors = Errors::default();
        throttle_v1(
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 8192\n8:0 Async 4096\n8:0 Discard 0\n8:0 Total 12288\nTotal 12288\n",
            true,
            &mut devices,
            &mut errors,
        );
        throttle_v1(
            "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
            false,
            &mut devices,
            &mut errors,
        );
        assert_eq!(
            devices,
            vec![DeviceIo {
                major: 8,
                minor: 0,
                read_bytes: 4096,
                write_bytes: 8192,
                reads: 1,
                writes: 2
            }]
        );
        throttle_v1("Total 0\n", true, &mut devices, &mut errors);
        throttle_v1("8:0 Read\nx:y Read 1\n", true, &mut devices, &mut errors);
        assert_eq!(errors.count("blkio.throttle.io_service_bytes"), 2);
    }
}
