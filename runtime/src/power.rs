//! Battery and temperature, read from Linux sysfs, for the threshold controller.
//!
//! The controller only needs three facts: is the device on mains power, how full is the battery, and how hot is
//! the hottest sensor. Laptops, phones and a Raspberry Pi all expose them in the same two trees:
//! `/sys/class/power_supply/*/{type,status,capacity,online}` and `/sys/class/thermal/thermal_zone*/temp`
//! (millidegrees Celsius). Both roots are parameters so that tests (and containers with a bind-mounted sysfs)
//! can point elsewhere.
//!
//! Readers never fail and never panic: a missing tree, an unreadable file or a garbled value is "unknown", because
//! the controller must keep answering requests whatever the kernel exposes. What was unreadable is kept in the
//! reading so that it can be logged once.

use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the kernel lists power supplies.
pub const DEFAULT_POWER_ROOT: &str = "/sys/class/power_supply";
/// Where the kernel lists thermal zones.
pub const DEFAULT_THERMAL_ROOT: &str = "/sys/class/thermal";

/// Temperatures outside this range (°C) are sensor garbage (disabled zones report -273.2 or 0xFFFF…), not heat.
const PLAUSIBLE_CELSIUS: std::ops::RangeInclusive<f32> = -40.0..=150.0;

/// What the power supplies say, reduced to what the controller decides on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Supply {
    /// No battery at all (a Pi, a desktop): behaves as mains power.
    NoBattery,
    /// A battery exists and the device is on external power (charging, full, or "not charging" while plugged in).
    Mains { capacity: Option<f32> },
    /// Running from the battery.
    Battery { capacity: Option<f32> },
    /// Batteries exist but neither their status nor an adapter says which way the power flows.
    Unknown { capacity: Option<f32> },
}

impl Supply {
    /// Battery charge in percent, when a battery reported one.
    pub fn capacity(&self) -> Option<f32> {
        match *self {
            Supply::NoBattery => None,
            Supply::Mains { capacity } | Supply::Battery { capacity } | Supply::Unknown { capacity } => capacity,
        }
    }
}

impl fmt::Display for Supply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |c: Option<f32>| c.map(|c| format!(" at {c:.0}%")).unwrap_or_default();
        match *self {
            Supply::NoBattery => f.write_str("no battery"),
            Supply::Mains { capacity } => write!(f, "mains power{}", pct(capacity)),
            Supply::Battery { capacity } => write!(f, "battery{}", pct(capacity)),
            Supply::Unknown { capacity } => write!(f, "unknown power state{}", pct(capacity)),
        }
    }
}

/// One look at the device: power supply and hottest plausible thermal zone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PowerReading {
    pub supply: Supply,
    /// Hottest thermal zone in °C; `None` when no zone gave a plausible value.
    pub temperature_c: Option<f32>,
    /// Files that existed but could not be read or parsed, for a one-time log line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub garbled: Vec<String>,
}

impl PowerReading {
    /// A reading for tests and for devices without sysfs.
    pub fn new(supply: Supply, temperature_c: Option<f32>) -> Self {
        Self { supply, temperature_c, garbled: Vec::new() }
    }
}

/// A source of readings: sysfs in production, a scripted sequence in tests.
pub trait PowerProbe {
    fn read(&mut self) -> PowerReading;
}

/// Reads the two sysfs trees.
#[derive(Debug, Clone)]
pub struct SysfsProbe {
    pub power_root: PathBuf,
    pub thermal_root: PathBuf,
}

impl Default for SysfsProbe {
    fn default() -> Self {
        Self { power_root: DEFAULT_POWER_ROOT.into(), thermal_root: DEFAULT_THERMAL_ROOT.into() }
    }
}

impl SysfsProbe {
    pub fn new(power_root: impl Into<PathBuf>, thermal_root: impl Into<PathBuf>) -> Self {
        Self { power_root: power_root.into(), thermal_root: thermal_root.into() }
    }
}

impl PowerProbe for SysfsProbe {
    fn read(&mut self) -> PowerReading {
        let mut garbled = Vec::new();
        let supply = read_supply(&self.power_root, &mut garbled);
        let temperature_c = read_temperature(&self.thermal_root, &mut garbled);
        PowerReading { supply, temperature_c, garbled }
    }
}

/// The sysfs status of one battery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatteryStatus {
    Charging,
    Discharging,
    Full,
    NotCharging,
    Unknown,
}

fn parse_status(text: &str) -> Option<BatteryStatus> {
    match text.trim() {
        "Charging" => Some(BatteryStatus::Charging),
        "Discharging" => Some(BatteryStatus::Discharging),
        "Full" => Some(BatteryStatus::Full),
        "Not charging" => Some(BatteryStatus::NotCharging),
        "Unknown" => Some(BatteryStatus::Unknown),
        _ => None,
    }
}

/// Reads a small sysfs attribute: `Ok(None)` when the file does not exist, `Err(())` when it exists but is
/// unreadable or not UTF-8 (its path is recorded in `garbled`).
fn read_attr(path: &Path, garbled: &mut Vec<String>) -> Result<Option<String>, ()> {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Ok(Some(text)),
            Err(_) => {
                garbled.push(path.display().to_string());
                Err(())
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(_) => {
            garbled.push(path.display().to_string());
            Err(())
        }
    }
}

/// Directory entries sorted by name, so that readings are deterministic; an unreadable root is empty.
fn sorted_entries(root: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(root) {
        Ok(dir) => dir.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    entries.sort();
    entries
}

/// Combines every supply under `root`.
///
/// A battery that says Discharging wins (the device is draining, whatever an adapter claims); then Charging,
/// Full or Not charging, or an online mains/USB adapter, mean external power; with batteries but nothing
/// conclusive the state is Unknown. The capacity reported is the lowest of the batteries, since the emptiest one
/// is what shuts the device down.
fn read_supply(root: &Path, garbled: &mut Vec<String>) -> Supply {
    let mut batteries = 0usize;
    let mut capacity: Option<f32> = None;
    let (mut discharging, mut external) = (false, false);
    let mut adapter_offline = false;
    for dir in sorted_entries(root) {
        let Ok(Some(kind)) = read_attr(&dir.join("type"), garbled) else { continue };
        match kind.trim() {
            "Battery" => {
                batteries += 1;
                if let Ok(Some(text)) = read_attr(&dir.join("capacity"), garbled) {
                    match text.trim().parse::<f32>() {
                        Ok(c) if (0.0..=100.0).contains(&c) => {
                            capacity = Some(capacity.map_or(c, |prev: f32| prev.min(c)));
                        }
                        _ => garbled.push(dir.join("capacity").display().to_string()),
                    }
                }
                if let Ok(Some(text)) = read_attr(&dir.join("status"), garbled) {
                    match parse_status(&text) {
                        Some(BatteryStatus::Discharging) => discharging = true,
                        Some(BatteryStatus::Charging | BatteryStatus::Full | BatteryStatus::NotCharging) => {
                            external = true
                        }
                        Some(BatteryStatus::Unknown) => {}
                        None => garbled.push(dir.join("status").display().to_string()),
                    }
                }
            }
            // Adapters: "Mains", "USB", "USB_C", "USB_PD", … all carry `online`.
            "Mains" | "USB" | "USB_C" | "USB_PD" | "USB_PD_DRP" | "USB_DCP" | "USB_CDP" | "USB_ACA" | "Wireless" => {
                if let Ok(Some(text)) = read_attr(&dir.join("online"), garbled) {
                    match text.trim() {
                        "1" => external = true,
                        "0" => adapter_offline = true,
                        _ => garbled.push(dir.join("online").display().to_string()),
                    }
                }
            }
            _ => {}
        }
    }
    if batteries == 0 {
        Supply::NoBattery
    } else if discharging {
        Supply::Battery { capacity }
    } else if external {
        Supply::Mains { capacity }
    } else if adapter_offline {
        Supply::Battery { capacity }
    } else {
        Supply::Unknown { capacity }
    }
}

/// The hottest plausible `thermal_zone*/temp` under `root`, in °C.
fn read_temperature(root: &Path, garbled: &mut Vec<String>) -> Option<f32> {
    let mut hottest: Option<f32> = None;
    for dir in sorted_entries(root) {
        let is_zone = dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("thermal_zone"));
        if !is_zone {
            continue;
        }
        let path = dir.join("temp");
        let Ok(Some(text)) = read_attr(&path, garbled) else { continue };
        match text.trim().parse::<i64>() {
            Ok(milli) => {
                let celsius = milli as f32 / 1000.0;
                if PLAUSIBLE_CELSIUS.contains(&celsius) {
                    hottest = Some(hottest.map_or(celsius, |h: f32| h.max(celsius)));
                }
            }
            Err(_) => garbled.push(path.display().to_string()),
        }
    }
    hottest
}

/// Polls a probe at most once per interval: reading sysfs on every request would cost more than a layer on a
/// small model, while power and temperature change over seconds.
pub struct PowerMonitor<P: PowerProbe> {
    probe: P,
    interval: Duration,
    last: Option<Instant>,
}

impl<P: PowerProbe> PowerMonitor<P> {
    pub fn new(probe: P, interval: Duration) -> Self {
        Self { probe, interval, last: None }
    }

    /// A fresh reading if the interval has passed since the last one (or there was none), else `None`.
    pub fn poll(&mut self, now: Instant) -> Option<PowerReading> {
        let due = self.last.is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            return None;
        }
        self.last = Some(now);
        Some(self.probe.read())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A fake sysfs with a helper to write attributes.
    struct FakeSys {
        dir: tempfile::TempDir,
    }

    impl FakeSys {
        fn new() -> Self {
            Self { dir: tempfile::tempdir().unwrap() }
        }
        fn power(&self) -> PathBuf {
            self.dir.path().join("power_supply")
        }
        fn thermal(&self) -> PathBuf {
            self.dir.path().join("thermal")
        }
        fn set(&self, rel: &str, content: &[u8]) {
            let path = self.dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        fn probe(&self) -> SysfsProbe {
            SysfsProbe::new(self.power(), self.thermal())
        }
    }

    #[test]
    fn absent_trees_mean_no_battery_and_no_temperature() {
        let sys = FakeSys::new();
        let r = sys.probe().read();
        assert_eq!(r.supply, Supply::NoBattery);
        assert_eq!(r.temperature_c, None);
        assert!(r.garbled.is_empty());
        // A root that is a file, not a directory, is just as absent.
        sys.set("power_supply", b"not a dir");
        assert_eq!(sys.probe().read().supply, Supply::NoBattery);
    }

    #[test]
    fn laptop_battery_discharging_then_charging() {
        let sys = FakeSys::new();
        sys.set("power_supply/AC/type", b"Mains\n");
        sys.set("power_supply/AC/online", b"0\n");
        sys.set("power_supply/BAT0/type", b"Battery\n");
        sys.set("power_supply/BAT0/status", b"Discharging\n");
        sys.set("power_supply/BAT0/capacity", b"57\n");
        let mut probe = sys.probe();
        assert_eq!(probe.read().supply, Supply::Battery { capacity: Some(57.0) });

        sys.set("power_supply/AC/online", b"1\n");
        sys.set("power_supply/BAT0/status", b"Charging\n");
        assert_eq!(probe.read().supply, Supply::Mains { capacity: Some(57.0) });

        sys.set("power_supply/BAT0/status", b"Full\n");
        sys.set("power_supply/BAT0/capacity", b"100\n");
        assert_eq!(probe.read().supply, Supply::Mains { capacity: Some(100.0) });

        // Unplugged again: the status flips back.
        sys.set("power_supply/AC/online", b"0\n");
        sys.set("power_supply/BAT0/status", b"Discharging\n");
        sys.set("power_supply/BAT0/capacity", b"12\n");
        assert_eq!(probe.read().supply, Supply::Battery { capacity: Some(12.0) });
    }

    #[test]
    fn two_batteries_report_the_emptiest_and_discharging_wins() {
        let sys = FakeSys::new();
        sys.set("power_supply/BAT0/type", b"Battery");
        sys.set("power_supply/BAT0/status", b"Not charging");
        sys.set("power_supply/BAT0/capacity", b"80");
        sys.set("power_supply/BAT1/type", b"Battery");
        sys.set("power_supply/BAT1/status", b"Discharging");
        sys.set("power_supply/BAT1/capacity", b"30");
        assert_eq!(sys.probe().read().supply, Supply::Battery { capacity: Some(30.0) });
    }

    #[test]
    fn status_unknown_falls_back_to_the_adapter_or_unknown() {
        let sys = FakeSys::new();
        sys.set("power_supply/BAT0/type", b"Battery");
        sys.set("power_supply/BAT0/status", b"Unknown");
        sys.set("power_supply/BAT0/capacity", b"64");
        assert_eq!(sys.probe().read().supply, Supply::Unknown { capacity: Some(64.0) });
        sys.set("power_supply/usb/type", b"USB");
        sys.set("power_supply/usb/online", b"1");
        assert_eq!(sys.probe().read().supply, Supply::Mains { capacity: Some(64.0) });
        sys.set("power_supply/usb/online", b"0");
        assert_eq!(sys.probe().read().supply, Supply::Battery { capacity: Some(64.0) });
    }

    #[test]
    fn garbled_files_are_unknown_and_recorded_never_a_panic() {
        let sys = FakeSys::new();
        sys.set("power_supply/BAT0/type", b"Battery");
        sys.set("power_supply/BAT0/status", b"\xff\xfe garbage");
        sys.set("power_supply/BAT0/capacity", b"lots");
        // An adapter with an unreadable type is skipped.
        sys.set("power_supply/AC/type", b"\x80");
        // A supply directory with no type at all is skipped silently.
        sys.set("power_supply/weird/status", b"Discharging");
        sys.set("thermal/thermal_zone0/temp", b"hot");
        sys.set("thermal/thermal_zone1/temp", b"");
        let r = sys.probe().read();
        assert_eq!(r.supply, Supply::Unknown { capacity: None });
        assert_eq!(r.temperature_c, None);
        let joined = r.garbled.join(" ");
        for part in ["BAT0/status", "BAT0/capacity", "AC/type", "thermal_zone0/temp", "thermal_zone1/temp"] {
            assert!(joined.contains(part), "{part} missing from {joined}");
        }
        // Out-of-range capacities are garbage too.
        sys.set("power_supply/BAT0/capacity", b"250");
        sys.set("power_supply/BAT0/status", b"Discharging");
        assert_eq!(sys.probe().read().supply, Supply::Battery { capacity: None });
    }

    #[test]
    fn partial_tree_battery_without_capacity() {
        let sys = FakeSys::new();
        sys.set("power_supply/BAT0/type", b"Battery");
        sys.set("power_supply/BAT0/status", b"Discharging");
        let r = sys.probe().read();
        assert_eq!(r.supply, Supply::Battery { capacity: None });
        assert!(r.garbled.is_empty());
    }

    #[test]
    fn thermal_takes_the_hottest_plausible_zone() {
        let sys = FakeSys::new();
        sys.set("thermal/thermal_zone0/temp", b"45000\n");
        sys.set("thermal/thermal_zone1/temp", b"61500\n");
        // A disabled sensor and a cooling device are ignored.
        sys.set("thermal/thermal_zone2/temp", b"-273200\n");
        sys.set("thermal/cooling_device0/temp", b"99000\n");
        let mut probe = sys.probe();
        assert_eq!(probe.read().temperature_c, Some(61.5));
        // Heating up, then cooling down.
        sys.set("thermal/thermal_zone1/temp", b"83250\n");
        assert_eq!(probe.read().temperature_c, Some(83.25));
        sys.set("thermal/thermal_zone1/temp", b"70000\n");
        assert_eq!(probe.read().temperature_c, Some(70.0));
    }

    #[test]
    fn monitor_polls_once_per_interval() {
        struct Counting(u32);
        impl PowerProbe for Counting {
            fn read(&mut self) -> PowerReading {
                self.0 += 1;
                PowerReading::new(Supply::NoBattery, Some(self.0 as f32))
            }
        }
        let t0 = Instant::now();
        let mut m = PowerMonitor::new(Counting(0), Duration::from_secs(5));
        assert_eq!(m.poll(t0).unwrap().temperature_c, Some(1.0));
        assert!(m.poll(t0 + Duration::from_secs(4)).is_none());
        assert_eq!(m.poll(t0 + Duration::from_secs(5)).unwrap().temperature_c, Some(2.0));
        assert!(m.poll(t0 + Duration::from_secs(9)).is_none());
    }
}
