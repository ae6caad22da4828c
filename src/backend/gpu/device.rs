//! Finding an adapter and opening a device on it.

use super::shaders::WORKGROUP_BYTES;
use super::STORAGE;
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

/// Each of `limits` that falls short of what the kernels need, as e.g. `10 storage buffers per
/// kernel (it has 8)`.
pub fn shortfalls(limits: &wgpu::Limits) -> Vec<String> {
    let needs = [
        ("storage buffers per kernel", STORAGE, limits.max_storage_buffers_per_shader_stage),
        ("bytes of workgroup memory", WORKGROUP_BYTES, limits.max_compute_workgroup_storage_size),
        ("threads per workgroup", 256, limits.max_compute_invocations_per_workgroup),
        ("threads along x in a workgroup", 256, limits.max_compute_workgroup_size_x),
        ("workgroups along each dimension", 65_535, limits.max_compute_workgroups_per_dimension),
    ];
    needs
        .iter()
        .filter(|(_, need, has)| has < need)
        .map(|(what, need, has)| format!("{need} {what} (it has {has})"))
        .collect()
}

/// Why the kernels cannot run on `adapter`, if they cannot: the limits it falls short of.
pub fn unfit(adapter: &wgpu::Adapter) -> Option<String> {
    let short = shortfalls(&adapter.limits());
    let name = adapter.get_info().name;
    (!short.is_empty())
        .then(|| format!("the GPU adapter ({name}) is too small for the kernels, which need {}", short.join(", ")))
}

impl Gpu {
    /// Opens a device with the adapter's own limits (the defaults cap storage bindings at
    /// 128 MiB, which large datasets exceed on real GPUs), or says which of them fall short.
    pub fn open(adapter: wgpu::Adapter) -> Result<Gpu> {
        if let Some(why) = unfit(&adapter) {
            return Err(Error::Gpu(format!("{why}; use --backend cpu")));
        }
        // Timestamps, where the adapter has them, for `bench --profile`; nothing else uses them.
        let timestamps = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        let desc = wgpu::DeviceDescriptor {
            label: Some("gpu-train"),
            required_features: adapter.features() & timestamps,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// WebGPU's default limits hold neither the storage bindings nor the tiles.
    #[test]
    fn limits_that_fall_short_are_named() {
        assert_eq!(
            shortfalls(&wgpu::Limits::defaults()),
            ["10 storage buffers per kernel (it has 8)", "21504 bytes of workgroup memory (it has 16384)"]
        );
        let enough = wgpu::Limits {
            max_storage_buffers_per_shader_stage: STORAGE,
            max_compute_workgroup_storage_size: WORKGROUP_BYTES,
            ..wgpu::Limits::defaults()
        };
        assert!(shortfalls(&enough).is_empty());
    }
}
