//! Device selection (`auto` picks CUDA when libtorch sees a GPU) and libtorch's CPU thread count.

use crate::error::{Result, TrainerError};
use tch::Device;

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(name: &str) -> Result<Device> {
    match name.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => cuda(n),
            None => Err(TrainerError::Invalid(format!("unknown device '{name}' (expected auto, cpu, cuda or cuda:N)"))),
        },
    }
}

fn cuda(index: usize) -> Result<Device> {
    if !tch::Cuda::is_available() {
        return Err(TrainerError::Invalid(
            "CUDA was requested but libtorch sees no GPU (a CPU-only libtorch, or a build without the `cuda` \
             feature)"
                .into(),
        ));
    }
    let count = tch::Cuda::device_count() as usize;
    if index >= count {
        return Err(TrainerError::Invalid(format!("cuda:{index} requested, {count} GPU(s) visible")));
    }
    Ok(Device::Cuda(index))
}

/// Sets libtorch's intra-op thread count (`None` keeps libtorch's default, one per core). The count is checked by
/// the caller (`cosee_format::settings::threads`): at most 1024, so it fits libtorch's i32.
pub fn set_threads(threads: Option<usize>) {
    if let Some(n) = threads {
        tch::set_num_threads(i32::try_from(n).unwrap_or(i32::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu").is_err());
        if !tch::Cuda::is_available() {
            assert_eq!(parse_device("auto").unwrap(), Device::Cpu);
            assert!(parse_device("cuda:0").is_err());
        }
    }
}
