//! Finding an adapter and opening a device on it.

use crate::error::{Error, Result};

/// An open device and what it runs on.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
}

/// The preferred adapter: high performance, on the platform's primary API (Vulkan on Linux).
/// The error is wgpu's reason when there is none.
pub fn adapter() -> std::result::Result<wgpu::Adapter, String> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::PRIMARY;
    let instance = wgpu::Instance::new(desc);
    let options =
        wgpu::RequestAdapterOptions { power_preference: wgpu::PowerPreference::HighPerformance, ..Default::default() };
    pollster::block_on(instance.request_adapter(&options)).map_err(|e| e.to_string())
}

/// Whether an adapter is a software rasteriser (lavapipe, llvmpipe, WARP).
pub fn is_software(info: &wgpu::AdapterInfo) -> bool {
    info.device_type == wgpu::DeviceType::Cpu
}

impl Gpu {
    /// Opens a device with the adapter's own limits (the defaults cap storage bindings at
    /// 128 MiB, which large datasets exceed on real GPUs).
    pub fn open(adapter: wgpu::Adapter) -> Result<Gpu> {
        let desc = wgpu::DeviceDescriptor {
            label: Some("gpu-train"),
            required_limits: adapter.limits(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| Error::Gpu(format!("could not open a device on {}: {e}", adapter.get_info().name)))?;
        Ok(Gpu { device, queue, info: adapter.get_info() })
    }

    /// e.g. `NVIDIA H100 80GB HBM3, Vulkan` or `llvmpipe (LLVM 15.0.6, 256 bits), Vulkan, software`.
    pub fn describe(&self) -> String {
        let software = if is_software(&self.info) { ", software" } else { "" };
        format!("{}, {:?}{software}", self.info.name, self.info.backend)
    }
}
