//! Which device tensors live on.

use candle_core::Device;

/// The first CUDA GPU when built with the `cuda` feature and one is present, else the CPU.
/// `RAGTUNE_DEVICE=cpu` forces the CPU.
pub fn default_device() -> Device {
    if std::env::var("RAGTUNE_DEVICE").is_ok_and(|v| v.eq_ignore_ascii_case("cpu")) {
        return Device::Cpu;
    }
    Device::cuda_if_available(0).unwrap_or(Device::Cpu)
}
