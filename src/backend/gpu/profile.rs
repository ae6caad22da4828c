//! Each launch of a step timed on the device: every launch in a compute pass of its own with
//! timestamps written at the pass's start and end (WebGPU's `TIMESTAMP_QUERY`), the step run
//! several times, the median kept per launch.

use super::GpuBackend;
use crate::backend::{Backend, KernelTime, Profile};
use crate::error::{Error, Result};
use crate::graph::{Op, Step};
use crate::optim::adam_correction;

/// Queries one query set may hold (wgpu's bound).
const MAX_QUERIES: usize = 4096;

impl GpuBackend {
    /// `reps` runs of `ops` (fewer if the launches' timestamps would not fit one query set),
    /// each launch timed alone; the first run is a warm-up and is not counted.
    pub(super) fn time_launches(&mut self, ops: &[Op], step: Step, reps: usize) -> Result<Profile> {
        if !self.gpu.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Ok(Profile::Unavailable(format!(
                "the adapter ({}) has no TIMESTAMP_QUERY, so kernels cannot be timed on the device",
                self.gpu.info.name
            )));
        }
        self.finish()?;
        let index = self.program(ops)?;
        let launches = self.programs[index].launches.len();
        let reps = reps.min(MAX_QUERIES / (2 * launches.max(1))).max(2);
        let count = (2 * launches * reps) as u32;
        let device = &self.gpu.device;
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("kernel times"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let bytes = count as u64 * 8;
        let resolved = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kernel times"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kernel times read back"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let program = &self.programs[index];
        let correction = program.adam.map_or(0.0, |(b1, b2)| adam_correction(b1, b2, step.t));
        let uniforms = [step.n as u32, step.offset as u32, step.t, correction.to_bits()];
        self.gpu.queue.write_buffer(&self.steps, 0, bytemuck::cast_slice(&uniforms));
        let mut enc = device.create_command_encoder(&Default::default());
        for rep in 0..reps {
            for (i, launch) in program.launches.iter().enumerate() {
                let at = (2 * (rep * launches + i)) as u32;
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &queries,
                        beginning_of_pass_write_index: Some(at),
                        end_of_pass_write_index: Some(at + 1),
                    }),
                });
                let [x, y, z] = launch.grid.groups(step.n);
                if x * y * z > 0 {
                    pass.set_pipeline(&launch.pipeline);
                    pass.set_bind_group(0, &launch.bind_group, &[0]);
                    pass.dispatch_workgroups(x, y, z);
                }
            }
        }
        enc.resolve_query_set(&queries, 0..count, &resolved, 0);
        enc.copy_buffer_to_buffer(&resolved, 0, &readback, 0, bytes);
        let submitted = self.gpu.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        readback.slice(..).map_async(wgpu::MapMode::Read, move |r| tx.send(r).unwrap_or(()));
        self.wait(Some(submitted))?;
        rx.recv().map_err(|e| Error::Gpu(e.to_string()))?.map_err(|e| Error::Gpu(format!("kernel times: {e}")))?;
        let ticks: Vec<u64> = {
            let view = readback.slice(..).get_mapped_range().map_err(|e| Error::Gpu(e.to_string()))?;
            bytemuck::pod_collect_to_vec(&view)
        };
        let ns_per_tick = f64::from(self.gpu.queue.get_timestamp_period());
        let program = &self.programs[index];
        let times = program
            .launches
            .iter()
            .enumerate()
            .map(|(i, launch)| {
                let mut ms: Vec<f64> = (1..reps)
                    .map(|rep| {
                        let at = 2 * (rep * launches + i);
                        ticks[at + 1].saturating_sub(ticks[at]) as f64 * ns_per_tick / 1e6
                    })
                    .collect();
                ms.sort_by(f64::total_cmp);
                let k = &launch.kernel;
                let constants: Vec<String> = k.constants.iter().map(|(name, v)| format!("{name}={v}")).collect();
                let kernel = format!("{}::{}", k.family.file().trim_end_matches(".wgsl"), k.entry);
                let kernel = if constants.is_empty() { kernel } else { format!("{kernel} [{}]", constants.join(" ")) };
                KernelTime { launch: i, kernel, ms: ms[ms.len() / 2] }
            })
            .collect();
        Ok(Profile::Times(times))
    }
}
