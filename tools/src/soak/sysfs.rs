//! A fake power-supply and thermal tree, in the layout `serve --power-root/--thermal-root` reads
//! (`cosee_runtime::power`), rewritten while `serve` runs with changing and garbage values: plausible states that
//! move the power policy (low battery, mains, hot) between states no kernel should write (bytes that are not UTF-8,
//! words, overflowing numbers, empty or missing files). Files are rewritten in place, not renamed, so `serve` may
//! also read one half-written.

use std::io;
use std::path::{Path, PathBuf};

/// One state of the tree: battery `status` and `capacity`, adapter `online`, zone `temp` (`None`: the file is
/// removed).
struct State {
    status: Option<&'static [u8]>,
    capacity: Option<&'static [u8]>,
    online: Option<&'static [u8]>,
    temp: Option<&'static [u8]>,
}

const STATES: &[State] = &[
    // On battery at 10 %: the energy saver.
    State { status: Some(b"Discharging\n"), capacity: Some(b"10\n"), online: Some(b"0\n"), temp: Some(b"41000\n") },
    // Charging: accuracy first.
    State { status: Some(b"Charging\n"), capacity: Some(b"80\n"), online: Some(b"1\n"), temp: Some(b"45000\n") },
    // Garbage of every sort.
    State { status: Some(b"\xff\xfe\xc3\n"), capacity: Some(b"abc\n"), online: Some(b"2\n"), temp: Some(b"hot\n") },
    // On battery, hot.
    State { status: Some(b"Discharging\n"), capacity: Some(b"55\n"), online: Some(b"0\n"), temp: Some(b"92000\n") },
    // Files gone.
    State { status: None, capacity: None, online: None, temp: None },
    // Out of range and overflowing numbers.
    State {
        status: Some(b"Full\n"),
        capacity: Some(b"-5\n"),
        online: Some(b"1\n"),
        temp: Some(b"99999999999999999999999999\n"),
    },
    // Empty files.
    State { status: Some(b""), capacity: Some(b""), online: Some(b""), temp: Some(b"") },
    // Odd but parseable: NaN capacity, absolute zero (a disabled zone), NUL bytes.
    State {
        status: Some(b"Not charging\n"),
        capacity: Some(b"NaN\n"),
        online: Some(b"\0\0\0"),
        temp: Some(b"-273200\n"),
    },
];

/// The fake trees under one directory: `power_supply/{BAT0,AC}` and `thermal/thermal_zone0`.
#[derive(Debug, Clone)]
pub struct FakeSysfs {
    pub power_root: PathBuf,
    pub thermal_root: PathBuf,
    rewrites: usize,
}

impl FakeSysfs {
    pub fn create(dir: &Path) -> io::Result<Self> {
        let power_root = dir.join("power_supply");
        let thermal_root = dir.join("thermal");
        std::fs::create_dir_all(power_root.join("BAT0"))?;
        std::fs::create_dir_all(power_root.join("AC"))?;
        std::fs::create_dir_all(thermal_root.join("thermal_zone0"))?;
        std::fs::write(power_root.join("BAT0/type"), "Battery\n")?;
        std::fs::write(power_root.join("AC/type"), "Mains\n")?;
        let mut fake = Self { power_root, thermal_root, rewrites: 0 };
        fake.write_state(0)?;
        fake.rewrites = 0;
        Ok(fake)
    }

    /// Rewrites every file to the next state of the cycle.
    pub fn step(&mut self) -> io::Result<()> {
        self.write_state(self.rewrites + 1)
    }

    /// How many times the tree was rewritten.
    pub fn rewrites(&self) -> usize {
        self.rewrites
    }

    fn write_state(&mut self, n: usize) -> io::Result<()> {
        let state = &STATES[n % STATES.len()];
        let files = [
            (self.power_root.join("BAT0/status"), state.status),
            (self.power_root.join("BAT0/capacity"), state.capacity),
            (self.power_root.join("AC/online"), state.online),
            (self.thermal_root.join("thermal_zone0/temp"), state.temp),
        ];
        for (path, content) in files {
            match content {
                Some(bytes) => std::fs::write(&path, bytes)?,
                None => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                },
            }
        }
        self.rewrites = n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cosee_runtime::power::{PowerProbe, Supply, SysfsProbe};

    #[test]
    fn the_cycle_moves_the_reading_between_battery_mains_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let mut fake = FakeSysfs::create(dir.path()).unwrap();
        let mut probe = SysfsProbe::new(&fake.power_root, &fake.thermal_root);
        let first = probe.read();
        assert_eq!(first.supply, Supply::Battery { capacity: Some(10.0) });
        assert_eq!(first.temperature_c, Some(41.0));
        fake.step().unwrap();
        assert_eq!(probe.read().supply, Supply::Mains { capacity: Some(80.0) });
        fake.step().unwrap();
        let garbage = probe.read();
        assert!(!garbage.garbled.is_empty() && garbage.temperature_c.is_none(), "{garbage:?}");
        for _ in 0..STATES.len() * 2 {
            fake.step().unwrap();
            probe.read();
        }
        assert_eq!(fake.rewrites(), 2 + STATES.len() * 2);
    }
}
