//! Which device tensors live on: `cpu`, `cuda` (the first GPU) or `cuda:N`.
//!
//! One process-wide choice, made by `--device` on the command line, `set_device()` in scripts,
//! or `RAGTUNE_DEVICE`; without any, the first CUDA GPU when this build has CUDA and one is
//! present, else the CPU.

use std::sync::Mutex;

use anyhow::{bail, Result};
use candle_core::Device;

static CHOSEN: Mutex<Option<Device>> = Mutex::new(None);

/// Parses and opens a device: `cpu`, `cuda` or `cuda:N`. Asking for CUDA from a build without
/// it, or for a GPU that is not there, is an error saying so.
pub fn open(spec: &str) -> Result<Device> {
    let spec = spec.trim();
    let lower = spec.to_ascii_lowercase();
    if lower == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match lower.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => match rest.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => bail!("device `{spec}`: expected cpu, cuda or cuda:N (N a GPU index)"),
        },
        None => bail!("device `{spec}`: expected cpu, cuda or cuda:N"),
    };
    open_cuda(spec, ordinal)
}

#[cfg(feature = "cuda")]
fn open_cuda(spec: &str, ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| {
        // candle's driver errors carry a backtrace after the first line: keep the message.
        let why = e.to_string();
        let why = why.lines().next().unwrap_or_default();
        anyhow::anyhow!(
            "device `{spec}`: CUDA GPU {ordinal} cannot be opened (is there a GPU and a driver?): {why}"
        )
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(spec: &str, _ordinal: usize) -> Result<Device> {
    bail!(
        "device `{spec}`: this ragtune was built without CUDA; build it with \
         `cargo build --release --features cuda` where the CUDA toolkit is installed"
    )
}

/// Makes `spec` the device every later model load uses; returns it.
pub fn set_default(spec: &str) -> Result<Device> {
    let device = open(spec)?;
    *CHOSEN.lock().expect("device lock poisoned") = Some(device.clone());
    Ok(device)
}

/// The device models load onto: the one set by [`set_default`], else `RAGTUNE_DEVICE`, else the
/// first CUDA GPU when built with CUDA and one is present, else the CPU.
pub fn default_device() -> Device {
    if let Some(d) = CHOSEN.lock().expect("device lock poisoned").as_ref() {
        return d.clone();
    }
    if let Ok(spec) = std::env::var("RAGTUNE_DEVICE") {
        match open(&spec) {
            Ok(d) => return d,
            Err(e) => eprintln!("ragtune: RAGTUNE_DEVICE: {e:#}; using the CPU"),
        }
        return Device::Cpu;
    }
    Device::cuda_if_available(0).unwrap_or(Device::Cpu)
}

/// `cpu` or `cuda:N`, as [`open`] reads it.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_cuda_is_refused_clearly_without_it() {
        assert!(open("cpu").unwrap().is_cpu());
        assert!(open(" CPU ").unwrap().is_cpu());
        for bad in ["gpu", "cuda:x", "cuda1", "cuda:"] {
            let err = open(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("cuda:N"), "{err}");
        }
        if !cfg!(feature = "cuda") {
            let err = open("cuda:1").unwrap_err().to_string();
            assert!(err.contains("built without CUDA"), "{err}");
            assert_eq!(name(&Device::Cpu), "cpu");
        }
    }
}
