//! Container metering from cgroups: CPU time from `cpu.stat` (v2) or
//! `cpuacct.usage` (v1), memory from `memory.current` (v2) or
//! `memory.usage_in_bytes` (v1), read at every sample.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{AppLabels, Metrics};

/// The usage of one cgroup at its last reading.
#[derive(Debug)]
pub(super) struct CgroupMeter {
    app: String,
    cpu: Duration,
    memory: Option<u64>,
    at: Instant,
}

/// One reading of a cgroup: cumulative CPU time and current memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct CgroupReading {
    cpu: Option<Duration>,
    memory: Option<u64>,
}

/// Reads `cgroup` (as in the OCI spec's `cgroupsPath`, e.g. `/berth/ID`)
/// under `root`: v2 (unified) files first, then the v1 controllers.
pub(super) fn read_cgroup(root: &Path, cgroup: &Path) -> CgroupReading {
    let rel = cgroup.strip_prefix("/").unwrap_or(cgroup);
    let read = |p: PathBuf| std::fs::read_to_string(p).ok();
    let v2 = root.join(rel);
    let cpu = read(v2.join("cpu.stat"))
        .and_then(|stat| {
            stat.lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok())
                .map(Duration::from_micros)
        })
        .or_else(|| {
            ["cpuacct", "cpu,cpuacct"].iter().find_map(|c| {
                read(root.join(c).join(rel).join("cpuacct.usage"))
                    .and_then(|v| v.trim().parse().ok())
                    .map(Duration::from_nanos)
            })
        });
    let memory = read(v2.join("memory.current"))
        .or_else(|| read(root.join("memory").join(rel).join("memory.usage_in_bytes")))
        .and_then(|v| v.trim().parse().ok());
    CgroupReading { cpu, memory }
}

impl Metrics {
    /// Meters a container of `app` through its cgroup (the OCI spec's
    /// `cgroupsPath`, e.g. `/berth/ID`) from now on: the CPU time it used so
    /// far counts too.
    pub fn track_cgroup(&self, app: &str, cgroup: &Path) {
        self.track_cgroup_at(Instant::now(), app, cgroup);
    }

    pub(super) fn track_cgroup_at(&self, now: Instant, app: &str, cgroup: &Path) {
        let reading = read_cgroup(&self.cgroup_root, cgroup);
        let meter = CgroupMeter {
            app: app.into(),
            cpu: Duration::ZERO,
            memory: None,
            at: now,
        };
        let mut cgroups = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
        let meter = cgroups.entry(cgroup.to_path_buf()).or_insert(meter);
        self.meter(meter, reading, now);
    }

    /// Takes a last reading of `cgroup` and stops metering it: call it
    /// before the cgroup is removed.
    pub fn untrack_cgroup(&self, cgroup: &Path) {
        self.untrack_cgroup_at(Instant::now(), cgroup);
    }

    pub(super) fn untrack_cgroup_at(&self, now: Instant, cgroup: &Path) {
        let meter = self
            .cgroups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(cgroup);
        if let Some(mut meter) = meter {
            let reading = read_cgroup(&self.cgroup_root, cgroup);
            self.meter(&mut meter, reading, now);
        }
    }

    /// Adds what `meter`'s cgroup used since its last reading.
    pub(super) fn meter(&self, meter: &mut CgroupMeter, reading: CgroupReading, now: Instant) {
        let labels = AppLabels {
            app: meter.app.clone(),
        };
        if let Some(cpu) = reading.cpu {
            let used = cpu.saturating_sub(meter.cpu);
            if !used.is_zero() {
                self.cpu_seconds
                    .get_or_create(&labels)
                    .inc_by(used.as_secs_f64());
            }
            meter.cpu = cpu.max(meter.cpu);
        }
        if let (Some(before), Some(after)) = (meter.memory, reading.memory) {
            let seconds = now.saturating_duration_since(meter.at).as_secs_f64();
            let byte_seconds = (before as f64 + after as f64) / 2.0 * seconds;
            if byte_seconds > 0.0 {
                self.memory_gb_seconds
                    .get_or_create(&labels)
                    .inc_by(byte_seconds / 1e9);
            }
        }
        if reading.memory.is_some() {
            meter.memory = reading.memory;
        }
        meter.at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_usage_comes_from_the_cgroup_v2_or_v1() {
        let root = tempfile::tempdir().unwrap();
        let v2 = root.path().join("berth/c2");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("cpu.stat"), "usage_usec 250000\nuser_usec 1\n").unwrap();
        std::fs::write(v2.join("memory.current"), "2000000000\n").unwrap();
        let cpuacct = root.path().join("cpuacct/berth/c1");
        let memory = root.path().join("memory/berth/c1");
        std::fs::create_dir_all(&cpuacct).unwrap();
        std::fs::create_dir_all(&memory).unwrap();
        std::fs::write(cpuacct.join("cpuacct.usage"), "500000000\n").unwrap();
        std::fs::write(memory.join("memory.usage_in_bytes"), "1000000000\n").unwrap();

        let m = Metrics::new().with_cgroup_root(root.path());
        let t = Instant::now();
        let later = t + Duration::from_millis(200);
        m.track_cgroup_at(t, "v2app", Path::new("/berth/c2"));
        m.track_cgroup_at(t, "v1app", Path::new("/berth/c1"));
        std::fs::write(v2.join("cpu.stat"), "usage_usec 750000\n").unwrap();
        m.sample_at(later, &[]);
        m.untrack_cgroup_at(later, Path::new("/berth/c1"));
        m.untrack_cgroup_at(later, Path::new("/berth/c1"));
        let cpu = |app: &str| {
            m.cpu_seconds
                .get_or_create(&AppLabels { app: app.into() })
                .get()
        };
        let mem = |app: &str| {
            m.memory_gb_seconds
                .get_or_create(&AppLabels { app: app.into() })
                .get()
        };
        assert!((cpu("v2app") - 0.75).abs() < 1e-9, "{}", cpu("v2app"));
        assert!((cpu("v1app") - 0.5).abs() < 1e-9, "{}", cpu("v1app"));
        // 2 GB for 0.2 s, 1 GB for 0.2 s.
        assert!((mem("v2app") - 0.4).abs() < 1e-9, "{}", mem("v2app"));
        assert!((mem("v1app") - 0.2).abs() < 1e-9, "{}", mem("v1app"));
        // A cgroup that is gone reads as nothing and adds nothing.
        m.track_cgroup("gone", Path::new("/berth/none"));
        m.sample(&[]);
        assert_eq!((cpu("gone"), mem("gone")), (0.0, 0.0));
    }
}
