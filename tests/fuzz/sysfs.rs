//! The battery and thermal readers on any tree: files of any bytes, directories where files belong, any entry
//! names. A reading always comes back, and what it holds is plausible: a capacity within 0–100 %, a temperature
//! within the plausible range, and the state the files say when they are well formed.

use crate::{fuzz, holds};
use cosee_runtime::power::{PowerProbe, Supply, SysfsProbe};
use proptest::prelude::*;
use std::path::Path;

#[derive(Debug, Clone)]
enum Content {
    Bytes(Vec<u8>),
    Text(String),
    /// A directory where the file belongs (reading it fails).
    Directory,
    Missing,
}

fn content(plausible: Vec<&'static str>) -> impl Strategy<Value = Content> {
    prop_oneof![
        4 => prop::sample::select(plausible).prop_map(|s| Content::Text(s.to_string())),
        2 => ".{0,24}".prop_map(Content::Text),
        2 => prop::collection::vec(any::<u8>(), 0..24).prop_map(Content::Bytes),
        1 => Just(Content::Directory),
        1 => Just(Content::Missing),
    ]
}

#[derive(Debug, Clone)]
struct FakeSupply {
    name: String,
    kind: Content,
    status: Content,
    capacity: Content,
    online: Content,
}

fn supply() -> impl Strategy<Value = FakeSupply> {
    (
        prop_oneof![Just("BAT0".to_string()), Just("AC".to_string()), "[A-Za-z0-9_.-]{1,8}"],
        content(vec!["Battery\n", "Mains\n", "USB\n", "UPS\n", "Battery"]),
        content(vec!["Discharging\n", "Charging\n", "Full\n", "Not charging\n", "Unknown\n"]),
        content(vec!["0\n", "10\n", "55\n", "100\n", "101\n", "-1\n", "NaN\n", "inf\n", "1e3\n"]),
        content(vec!["0\n", "1\n", "2\n"]),
    )
        .prop_map(|(name, kind, status, capacity, online)| FakeSupply { name, kind, status, capacity, online })
}

fn zone() -> impl Strategy<Value = (String, Content)> {
    (
        prop_oneof![Just("thermal_zone0".to_string()), "thermal_zone[0-9]{1,3}", "[a-z_]{1,12}"],
        content(vec!["41000\n", "-273200\n", "150001\n", "99999999999999999999\n", "-40000\n", "85000"]),
    )
}

fn put(path: &Path, c: &Content) {
    match c {
        // Two supplies of one name may put a file where the other put a directory: the first one stays.
        Content::Bytes(b) => drop(std::fs::write(path, b)),
        Content::Text(t) => drop(std::fs::write(path, t)),
        Content::Directory => drop(std::fs::create_dir_all(path)),
        Content::Missing => {}
    }
}

#[test]
fn fuzz_sysfs_readers() {
    let tree = (prop::collection::vec(supply(), 0..4), prop::collection::vec(zone(), 0..4));
    fuzz("sysfs", 512, tree, |(supplies, zones)| {
        let dir = tempfile::tempdir().unwrap();
        let (power, thermal) = (dir.path().join("power"), dir.path().join("thermal"));
        std::fs::create_dir_all(&power).unwrap();
        std::fs::create_dir_all(&thermal).unwrap();
        for s in &supplies {
            let d = power.join(&s.name);
            if std::fs::create_dir_all(&d).is_err() {
                continue;
            }
            for (file, c) in
                [("type", &s.kind), ("status", &s.status), ("capacity", &s.capacity), ("online", &s.online)]
            {
                put(&d.join(file), c);
            }
        }
        for (name, c) in &zones {
            let d = thermal.join(name);
            if std::fs::create_dir_all(&d).is_ok() {
                put(&d.join("temp"), c);
            }
        }
        let reading = SysfsProbe::new(&power, &thermal).read();
        holds!(reading.supply.capacity().is_none_or(|c| (0.0..=100.0).contains(&c)), "{reading:?}");
        holds!(reading.temperature_c.is_none_or(|t| (-40.0..=150.0).contains(&t)), "{reading:?}");
        let batteries = supplies.iter().filter(|s| matches!(&s.kind, Content::Text(t) if t.trim() == "Battery"));
        if batteries.count() == 0 {
            holds!(reading.supply == Supply::NoBattery, "no battery file, yet {reading:?}");
        }
        Ok(())
    });
}
