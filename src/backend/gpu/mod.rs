//! The GPU backend: the plan's ops as WGSL compute shaders through wgpu. Buffers, pipelines and
//! bind groups are made once; a step records its dispatches into the pending command encoder,
//! which is submitted every few steps, before an upload and when a result is read.

pub mod bindings;
mod device;
mod encode;
mod layout;
mod passes;
mod profile;
pub mod shaders;

pub use device::{adapter, is_software, unfit, Gpu};

use super::{Backend, Profile};
use crate::error::{Error, Result};
use crate::graph::{BufDesc, BufId, Op, Step};
use crate::optim::adam_correction;
use encode::{Bind, Grid};
use layout::{byte_len, Layout};
use passes::launches;
use shaders::{Family, Kernel};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wgpu::util::DeviceExt;

/// Most steps recorded before a submit; also the number of per-step uniform slots.
const STEPS_PER_SUBMIT: u64 = 32;
/// Steps recorded before the first submit after the device went idle: the count then doubles
/// with each submit up to STEPS_PER_SUBMIT, so the device starts soon and submits stay few.
const FIRST_SUBMIT: u64 = 2;
/// Bytes per per-step uniform slot (the largest dynamic-offset alignment wgpu allows).
const SLOT: u64 = 256;
/// Storage bindings 2..2+STORAGE of every kernel.
const STORAGE: u32 = 10;

/// Byte alignment of parameter-set members when an op list is lowered without a device: the
/// largest any adapter may ask for (wgpu's default limit).
const ANY_ALIGN: u64 = 256;

/// The kernels of the launches that run `ops` over the plan buffers `descs`, in order, found
/// without a device.
pub fn kernels_of(ops: &[Op], descs: &[BufDesc]) -> Vec<Kernel> {
    launches(ops, descs, &Layout::new(descs, ANY_ALIGN)).0.into_iter().map(|l| l.kernel).collect()
}

/// Where a plan buffer lives: its own wgpu buffer, or a range of its parameter set's.
#[derive(Clone)]
struct Slice {
    buffer: wgpu::Buffer,
    offset: u64,
    size: u64,
}

impl Slice {
    fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new(self.size),
        })
    }

    fn whole(buffer: wgpu::Buffer) -> Self {
        Slice { size: buffer.size(), buffer, offset: 0 }
    }
}

struct Compiled {
    kernel: Kernel,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    grid: Grid,
}

/// The dispatches of one op list, found again by comparing the list.
struct Program {
    ops: Vec<Op>,
    launches: Vec<Compiled>,
    /// (β1, β2) of the list's Adam updates, for the per-step bias correction.
    adam: Option<(f32, f32)>,
}

pub struct GpuBackend {
    gpu: Gpu,
    descs: Vec<BufDesc>,
    bufs: Vec<Slice>,
    places: Layout,
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    modules: HashMap<Family, wgpu::ShaderModule>,
    pipelines: HashMap<Kernel, wgpu::ComputePipeline>,
    programs: Vec<Program>,
    /// One stand-in per storage slot that an op leaves unbound.
    dummies: Vec<wgpu::Buffer>,
    scratch: Option<(wgpu::Buffer, usize)>,
    /// Per-step uniforms, one 256-byte slot per step recorded since the last submit, written
    /// in one copy with the submit (`slots` holds them until then).
    steps: wgpu::Buffer,
    slots: Vec<u32>,
    next_slot: u64,
    /// Steps to record before the next submit.
    submit_at: u64,
    encoder: Option<wgpu::CommandEncoder>,
    last_submit: Option<wgpu::SubmissionIndex>,
    staging: Option<wgpu::Buffer>,
    build_time: Duration,
    /// wgpu errors (validation, out of memory, device lost) reported since the last check.
    errors: Arc<Mutex<Vec<String>>>,
    /// Bytes of every buffer this backend made.
    allocated: u64,
    /// Bytes one buffer may hold ([`buffer_budget`]).
    budget: u64,
}

fn storage_usage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC
}

fn layout_entry(binding: u32, ty: wgpu::BufferBindingType, dynamic: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: dynamic, min_binding_size: None },
        count: None,
    }
}

/// The one bind group layout every kernel shares (the per-step uniform with a dynamic offset,
/// the parameters, then the storage bindings), and its pipeline layout.
fn layouts(device: &wgpu::Device) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    let mut entries = vec![
        layout_entry(0, wgpu::BufferBindingType::Uniform, true),
        layout_entry(1, wgpu::BufferBindingType::Uniform, false),
    ];
    entries.extend(
        (2..2 + STORAGE).map(|b| layout_entry(b, wgpu::BufferBindingType::Storage { read_only: false }, false)),
    );
    let bind_layout =
        device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: None,
        bind_group_layouts: &[Some(&bind_layout)],
        immediate_size: 0,
    });
    (bind_layout, pipeline_layout)
}

const MIB: f64 = (1u64 << 20) as f64;

/// The most bytes one buffer may hold: a kernel binds each buffer whole, so this is the budget
/// of each split's images and masks on the device. The device's largest storage binding, or
/// less with `GPU_TRAIN_GPU_BUFFER_MIB` (to leave room on a shared card).
fn buffer_budget(limits: &wgpu::Limits) -> Result<u64> {
    let device = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
    match std::env::var("GPU_TRAIN_GPU_BUFFER_MIB") {
        Err(_) => Ok(device),
        Ok(v) => match v.parse::<u64>() {
            Ok(mib) if mib > 0 => Ok(device.min(mib << 20)),
            _ => Err(Error::Config(format!("GPU_TRAIN_GPU_BUFFER_MIB must be a whole number of MiB ≥ 1, got {v:?}"))),
        },
    }
}

impl GpuBackend {
    /// Creates the plan's buffers on `gpu`; a buffer larger than the device can bind is an error
    /// naming it.
    pub fn new(gpu: Gpu, descs: &[BufDesc]) -> Result<Self> {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        gpu.device
            .on_uncaptured_error(Arc::new(move |e: wgpu::Error| sink.lock().expect("error list").push(e.to_string())));
        let sink = errors.clone();
        gpu.device.set_device_lost_callback(move |reason, msg| {
            sink.lock().expect("error list").push(format!("device lost ({reason:?}): {msg}"))
        });
        let limits = gpu.device.limits();
        let max = buffer_budget(&limits)?;
        let align = u64::from(limits.min_storage_buffer_offset_alignment).max(4);
        let too_big = |name: &str, size: u64| {
            Error::Gpu(format!(
                "buffer '{name}' needs {:.1} MiB but the budget is {:.1} MiB per buffer on {}; smaller \
                 images (--image-size), fewer samples (--train-limit, --test-limit) or --backend cpu fit",
                size as f64 / MIB,
                max as f64 / MIB,
                gpu.info.name,
            ))
        };
        let device = &gpu.device;
        let make = |name: &str, size: u64| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(name),
                size,
                usage: storage_usage(),
                mapped_at_creation: false,
            })
        };
        let layout = Layout::new(descs, align);
        let mut set_bufs = Vec::with_capacity(layout.sets.len());
        for &(set, size) in &layout.sets {
            let name = format!("{set:?} parameters");
            if size > max {
                return Err(too_big(&name, size));
            }
            set_bufs.push(make(&name, size.max(4)));
        }
        let mut bufs = Vec::with_capacity(descs.len());
        for ((d, member), &size) in descs.iter().zip(&layout.members).zip(&layout.sizes) {
            if size > max {
                return Err(too_big(&d.name, size));
            }
            bufs.push(match member {
                Some(m) => Slice { buffer: set_bufs[m.set].clone(), offset: m.offset, size },
                None => Slice::whole(make(&d.name, size)),
            });
        }
        let own: u64 = layout.members.iter().zip(&layout.sizes).filter(|(m, _)| m.is_none()).map(|(_, s)| s).sum();
        let allocated =
            own + layout.sets.iter().map(|s| s.1).sum::<u64>() + STORAGE as u64 * 16 + STEPS_PER_SUBMIT * SLOT;
        let (bind_layout, pipeline_layout) = layouts(device);
        let dummies = (0..STORAGE)
            .map(|_| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("unbound"),
                    size: 16,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                })
            })
            .collect();
        let steps = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("steps"),
            size: STEPS_PER_SUBMIT * SLOT,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(GpuBackend {
            descs: descs.to_vec(),
            bufs,
            places: layout,
            layout: bind_layout,
            pipeline_layout,
            modules: HashMap::new(),
            pipelines: HashMap::new(),
            programs: Vec::new(),
            dummies,
            scratch: None,
            steps,
            slots: vec![0; (STEPS_PER_SUBMIT * SLOT / 4) as usize],
            next_slot: 0,
            submit_at: FIRST_SUBMIT,
            encoder: None,
            last_submit: None,
            staging: None,
            build_time: Duration::ZERO,
            errors,
            allocated,
            budget: max,
            gpu,
        })
    }

    /// The first wgpu error reported since the last check, as an error.
    fn check(&self) -> Result<()> {
        match self.errors.lock().expect("error list").drain(..).next() {
            Some(e) => Err(Error::Gpu(e)),
            None => Ok(()),
        }
    }

    /// Builds the pipelines of `kernels` not built yet, all at once on the thread pool: the
    /// driver compiles each one, which on a cold driver cache is most of a run's start-up.
    fn build_pipelines<'a>(&mut self, kernels: impl Iterator<Item = &'a Kernel>) {
        use rayon::prelude::*;
        let start = Instant::now();
        let mut todo: Vec<&Kernel> = Vec::new();
        for k in kernels {
            if !self.pipelines.contains_key(k) && !todo.contains(&k) {
                todo.push(k);
            }
        }
        let device = &self.gpu.device;
        for k in &todo {
            self.modules.entry(k.family).or_insert_with(|| {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(k.family.file()),
                    source: wgpu::ShaderSource::Wgsl(k.family.source().into()),
                };
                // SAFETY: every kernel's loops end (their bounds are sizes and tile counts) and
                // every index stays inside its buffer for the shapes the encoder launches, which
                // the parity tests check against the CPU backend on awkward shapes. Without the
                // injected loop counters the driver can unroll the tile loops and keep the
                // accumulators in registers: 27x faster products on an H100.
                unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
            });
        }
        let (modules, layout) = (&self.modules, &self.pipeline_layout);
        let built: Vec<_> = todo
            .into_par_iter()
            .map(|kernel| {
                let constants = kernel.override_values();
                let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(kernel.entry),
                    layout: Some(layout),
                    module: &modules[&kernel.family],
                    entry_point: Some(kernel.entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &constants,
                        ..Default::default()
                    },
                    cache: None,
                });
                (kernel.clone(), pipeline)
            })
            .collect();
        self.pipelines.extend(built);
        self.build_time += start.elapsed();
    }

    /// The scratch buffer, grown to at least `len` floats. Bind groups made earlier keep the
    /// smaller buffer they were made with, which is large enough for them.
    fn scratch(&mut self, len: usize) -> wgpu::Buffer {
        match &self.scratch {
            Some((buf, have)) if *have >= len => buf.clone(),
            _ => {
                let size = (len as u64 * 4).max(4);
                self.allocated += size;
                let buf = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("weight-gradient slices"),
                    size,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                });
                self.scratch = Some((buf.clone(), len));
                buf
            }
        }
    }

    fn compile(&mut self, ops: &[Op]) -> Program {
        let mut compiled = Vec::new();
        let (all, scratch_len) = launches(ops, &self.descs, &self.places);
        let scratch = self.scratch(scratch_len);
        self.build_pipelines(all.iter().map(|l| &l.kernel));
        for launch in all {
            let pipeline = self.pipelines[&launch.kernel].clone();
            // A uniform binding's size is a multiple of 16 bytes.
            let mut params = launch.params.bytes().to_vec();
            params.resize(params.len().next_multiple_of(16), 0);
            self.allocated += params.len() as u64;
            let device = &self.gpu.device;
            let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: &params,
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let storage: Vec<Slice> = (0..STORAGE)
                .map(|i| match launch.binds.iter().find(|(slot, _)| *slot == i + 2) {
                    Some(&(_, Bind::Buf(id))) => self.bufs[id.0].clone(),
                    Some(&(_, Bind::Span(first, last))) => {
                        let (first, last) = (&self.bufs[first.0], &self.bufs[last.0]);
                        let size = last.offset + last.size - first.offset;
                        Slice { size, ..first.clone() }
                    }
                    Some((_, Bind::Scratch)) => {
                        let (at, len) = (launch.scratch_at, launch.scratch);
                        let len = if len > 0 { len } else { scratch_len.max(1) - at };
                        Slice { buffer: scratch.clone(), offset: at as u64 * 4, size: len as u64 * 4 }
                    }
                    None => Slice::whole(self.dummies[i as usize].clone()),
                })
                .collect();
            let mut entries = vec![
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &self.steps,
                        offset: 0,
                        size: wgpu::BufferSize::new(16),
                    }),
                },
                wgpu::BindGroupEntry { binding: 1, resource: params.as_entire_binding() },
            ];
            entries.extend(
                storage
                    .iter()
                    .enumerate()
                    .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32 + 2, resource: b.binding() }),
            );
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &self.layout,
                entries: &entries,
            });
            compiled.push(Compiled { kernel: launch.kernel, pipeline, bind_group, grid: launch.grid });
        }
        let adam = ops.iter().find_map(|op| match *op {
            Op::Adam { beta1, beta2, .. } => Some((beta1, beta2)),
            _ => None,
        });
        Program { ops: ops.to_vec(), launches: compiled, adam }
    }

    /// The index of the program of `ops`, compiled first if need be.
    fn program(&mut self, ops: &[Op]) -> Result<usize> {
        if let Some(i) = self.programs.iter().position(|p| p.ops == ops) {
            return Ok(i);
        }
        let program = self.compile(ops);
        self.check()?;
        self.programs.push(program);
        Ok(self.programs.len() - 1)
    }

    /// Submits the pending steps. At most two submissions are in flight: the one before this is
    /// waited for, so recording never runs far ahead of the device.
    fn flush(&mut self) -> Result<()> {
        if let Some(enc) = self.encoder.take() {
            let recorded = (self.next_slot * SLOT / 4) as usize;
            self.gpu.queue.write_buffer(&self.steps, 0, bytemuck::cast_slice(&self.slots[..recorded]));
            let index = self.gpu.queue.submit([enc.finish()]);
            if let Some(prev) = self.last_submit.replace(index) {
                self.wait(Some(prev))?;
            }
        }
        self.next_slot = 0;
        Ok(())
    }

    fn wait(&self, index: Option<wgpu::SubmissionIndex>) -> Result<()> {
        self.gpu
            .device
            .poll(wgpu::PollType::Wait { submission_index: index, timeout: None })
            .map_err(|e| Error::Gpu(format!("waiting for the device: {e}")))?;
        self.check()
    }

    fn upload(&mut self, buf: BufId, bytes: &[u8]) -> Result<()> {
        self.flush()?;
        let size = byte_len(&self.descs[buf.0]) as usize;
        if bytes.len() > size {
            let name = &self.descs[buf.0].name;
            return Err(Error::Gpu(format!("{} bytes do not fit buffer '{name}' ({size} bytes)", bytes.len())));
        }
        // Writes are whole 4-byte words: u8 data gets zero padding.
        let mut padded = std::borrow::Cow::Borrowed(bytes);
        if !bytes.len().is_multiple_of(4) {
            padded.to_mut().resize(bytes.len().next_multiple_of(4), 0);
        }
        let b = &self.bufs[buf.0];
        self.gpu.queue.write_buffer(&b.buffer, b.offset, &padded);
        Ok(())
    }
}

impl Backend for GpuBackend {
    fn describe(&self) -> String {
        format!("gpu ({})", self.gpu.describe())
    }
    fn upload_f32(&mut self, buf: BufId, data: &[f32]) -> Result<()> {
        self.upload(buf, bytemuck::cast_slice(data))
    }
    fn upload_u8(&mut self, buf: BufId, data: &[u8]) -> Result<()> {
        self.upload(buf, data)
    }
    fn upload_u32(&mut self, buf: BufId, data: &[u32]) -> Result<()> {
        self.upload(buf, bytemuck::cast_slice(data))
    }
    fn download_f32(&mut self, buf: BufId) -> Result<Vec<f32>> {
        Ok(self.download_all(&[buf])?.remove(0))
    }
    fn download_all(&mut self, bufs: &[BufId]) -> Result<Vec<Vec<f32>>> {
        self.flush()?;
        let sizes: Vec<u64> = bufs.iter().map(|b| byte_len(&self.descs[b.0])).collect();
        let total = sizes.iter().sum::<u64>().max(4);
        if self.staging.as_ref().is_none_or(|s| s.size() < total) {
            self.allocated += total;
            self.staging = Some(self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: total,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let staging = self.staging.as_ref().expect("made above");
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        let mut at = 0;
        for (b, &size) in bufs.iter().zip(&sizes) {
            let b = &self.bufs[b.0];
            enc.copy_buffer_to_buffer(&b.buffer, b.offset, staging, at, size);
            at += size;
        }
        let index = self.gpu.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..total).map_async(wgpu::MapMode::Read, move |r| tx.send(r).unwrap_or(()));
        self.wait(Some(index))?;
        self.submit_at = FIRST_SUBMIT;
        let names = || bufs.iter().map(|b| format!("'{}'", self.descs[b.0].name)).collect::<Vec<_>>().join(", ");
        rx.recv()
            .map_err(|e| Error::Gpu(e.to_string()))?
            .map_err(|e| Error::Gpu(format!("reading {} back: {e}", names())))?;
        let data = {
            let view = staging.slice(..total).get_mapped_range().map_err(|e| Error::Gpu(e.to_string()))?;
            bytemuck::pod_collect_to_vec::<u8, f32>(&view)
        };
        staging.unmap();
        let mut at = 0;
        Ok(bufs
            .iter()
            .zip(&sizes)
            .map(|(b, &size)| {
                let v = data[at..at + self.descs[b.0].len].to_vec();
                at += size as usize / 4;
                v
            })
            .collect())
    }
    fn run(&mut self, ops: &[Op], step: Step) -> Result<()> {
        let index = self.program(ops)?;
        if self.next_slot == self.submit_at {
            self.flush()?;
            self.submit_at = (2 * self.submit_at).min(STEPS_PER_SUBMIT);
        }
        let slot = self.next_slot;
        self.next_slot += 1;
        let program = &self.programs[index];
        let correction = program.adam.map_or(0.0, |(b1, b2)| adam_correction(b1, b2, step.t));
        let at = (slot * SLOT / 4) as usize;
        self.slots[at..at + 4].copy_from_slice(&[step.n as u32, step.offset as u32, step.t, correction.to_bits()]);
        let enc = self.encoder.get_or_insert_with(|| self.gpu.device.create_command_encoder(&Default::default()));
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for launch in &program.launches {
                let [x, y, z] = launch.grid.groups(step.n);
                if x * y * z == 0 {
                    continue;
                }
                pass.set_pipeline(&launch.pipeline);
                pass.set_bind_group(0, &launch.bind_group, &[(slot * SLOT) as u32]);
                pass.dispatch_workgroups(x, y, z);
            }
        }
        Ok(())
    }
    fn prepare(&mut self, lists: &[&[Op]]) -> Result<()> {
        let new: Vec<&[Op]> =
            lists.iter().copied().filter(|ops| !self.programs.iter().any(|p| p.ops == *ops)).collect();
        let kernels: Vec<Kernel> = new
            .iter()
            .flat_map(|ops| launches(ops, &self.descs, &self.places).0.into_iter().map(|l| l.kernel))
            .collect();
        self.build_pipelines(kernels.iter());
        for ops in new {
            self.program(ops)?;
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        self.flush()?;
        self.submit_at = FIRST_SUBMIT;
        self.wait(None)
    }
    fn build_time(&self) -> Duration {
        self.build_time
    }
    fn buffer_budget(&self) -> Option<u64> {
        Some(self.budget)
    }
    fn allocated_bytes(&self) -> u64 {
        self.allocated
    }
    fn large_steps(&self) -> bool {
        true
    }
    fn launches(&self, ops: &[Op]) -> Option<usize> {
        self.programs.iter().find(|p| p.ops == ops).map(|p| p.launches.len())
    }
    fn profile(&mut self, ops: &[Op], step: Step, reps: usize) -> Result<Profile> {
        self.time_launches(ops, step, reps)
    }
}
