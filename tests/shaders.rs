//! Every WGSL module parses and validates with naga, and so does every specialisation (entry
//! point + override constants) that the plans of the report's networks and their variants,
//! at several sizes and every optimiser, lower to; the workgroup memory the backend asks of an
//! adapter is what the largest of them uses; and each family's parameter struct and storage
//! bindings are the ones its Rust mirror (`backend/gpu/bindings.rs`) declares. Needs no adapter.

mod common;

use gpu_train::backend::gpu::bindings::declared;
use gpu_train::backend::gpu::kernels_of;
use gpu_train::backend::gpu::shaders::{Family, Kernel, WORKGROUP_BYTES};
use gpu_train::graph::{build, DataSpec, PlanOptions, Target};
use gpu_train::model::{Act, Layer, Model, Shape};
use gpu_train::optim::Optimizer;
use gpu_train::tasks::{self, Task, Variant};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use std::collections::{HashMap, HashSet};

fn validate(module: &naga::Module) -> naga::valid::ModuleInfo {
    Validator::new(ValidationFlags::all(), Capabilities::empty())
        .validate(module)
        .unwrap_or_else(|e| panic!("{}", e.emit_to_string("")))
}

/// The kernels of the training and test steps of `task` at `sample` size, batch `batch`, with
/// the variant, optimiser and target given (`avg`: average pooling for max pooling).
fn plan_kernels(
    task: Task,
    sample: Shape,
    batch: usize,
    v: Variant,
    optimizer: Optimizer,
    target: Target,
    avg: bool,
) -> Vec<Kernel> {
    let mut model = tasks::model_for(task, v, sample, target);
    if avg {
        model.layers.iter_mut().filter(|n| n.layer == Layer::MaxPool2d).for_each(|n| n.layer = Layer::AvgPool2d);
    }
    model_kernels(&model, batch, optimizer, target)
}

/// The kernels of the training and test steps of `model`.
fn model_kernels(model: &Model, batch: usize, optimizer: Optimizer, target: Target) -> Vec<Kernel> {
    let sample = model.input;
    let data = DataSpec { train_n: 3 * batch, test_n: 2 * batch + 1, sample, target, mirrored: true };
    let plan = build(model, data, PlanOptions { batch, optimizer, input_grad: false, dropout_seed: 1 }).unwrap();
    let train: Vec<_> = plan.train.all().cloned().collect();
    [kernels_of(&train, &plan.buffers), kernels_of(&plan.eval, &plan.buffers)].concat()
}

/// The kernels that the report's networks and their variants lower to: every activation,
/// pooling before and after it, dropout, L2, every optimiser at two rates, average pooling,
/// masks of several classes, small and real sizes and batches.
fn emitted() -> HashSet<Kernel> {
    let optimisers = [
        Optimizer::Sgd { lr: 0.25, momentum: 0.0 },
        Optimizer::Sgd { lr: 0.01, momentum: 0.0 },
        Optimizer::Sgd { lr: 0.1, momentum: 0.9 },
        Optimizer::adam(1e-3),
    ];
    let mut out = HashSet::new();
    // A graph: values read twice, concatenations.
    for optimizer in optimisers {
        for batch in [1, 3] {
            out.extend(model_kernels(&common::small_unet(), batch, optimizer, Target::Mask));
            out.extend(model_kernels(&common::pool_upsample_add(), batch, optimizer, Target::Mask));
            out.extend(model_kernels(&common::strided(), batch, optimizer, Target::Classes(10)));
        }
    }
    for task in [Task::MnistMlp, Task::MnistCnn, Task::Warwick, Task::WarwickUnet] {
        let d = tasks::defaults(task);
        let real = tasks::input_shape(task);
        let small = match task {
            Task::MnistMlp => Shape::flat(37),
            Task::MnistCnn => Shape::new(1, 14, 18),
            Task::Warwick => Shape::new(3, 12, 20),
            Task::WarwickUnet => Shape::new(3, 16, 24),
        };
        let targets = match task {
            Task::Warwick | Task::WarwickUnet => vec![Target::Mask, Target::Segments(5)],
            _ => vec![Target::Classes(10)],
        };
        for act in [Act::Relu, Act::Sigmoid, Act::Tanh, Act::LeakyRelu] {
            for (dropout, l2, after) in [(0.0, 0.0, false), (0.3, 1e-3, true)] {
                let v = Variant { activation: act, dropout, l2, act_after_pool: after && task == Task::MnistCnn };
                for (&optimizer, &target) in optimisers.iter().zip(targets.iter().cycle()) {
                    for (sample, batch) in [(real, d.batch), (small, 3), (real, 1)] {
                        for avg in [false, task != Task::MnistMlp] {
                            out.extend(plan_kernels(task, sample, batch, v, optimizer, target, avg));
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_kernel_the_plans_emit_validates() {
    let mut modules = HashMap::new();
    for family in Family::ALL {
        let module = module(family);
        let info = validate(&module);
        modules.insert(family, (module, info));
    }
    let kernels = emitted();
    let mut most_workgroup_bytes = 0;
    for k in &kernels {
        let (module, info) = &modules[&k.family];
        let constants = k.override_values().into_iter().map(|(name, v)| (name.to_string(), v)).collect();
        let (m, m_info) = naga::back::pipeline_constants::process_overrides(
            module,
            info,
            Some((naga::ShaderStage::Compute, k.entry)),
            &constants,
        )
        .unwrap_or_else(|e| panic!("{k:?}: {e:?}"));
        let entry = m.entry_points.iter().position(|e| e.name == k.entry);
        let entry = m_info.get_entry_point(entry.unwrap_or_else(|| panic!("{k:?}: no such entry point")));
        let workgroup_bytes: u32 = m
            .global_variables
            .iter()
            .filter(|(h, v)| v.space == naga::AddressSpace::WorkGroup && !entry[*h].is_empty())
            .map(|(_, v)| m.types[v.ty].inner.size(m.to_ctx()))
            .sum();
        most_workgroup_bytes = most_workgroup_bytes.max(workgroup_bytes);
    }
    assert_eq!(most_workgroup_bytes, WORKGROUP_BYTES);
    // Every family is emitted.
    let families: HashSet<Family> = kernels.iter().map(|k| k.family).collect();
    assert_eq!(families.len(), Family::ALL.len(), "{} kernels", kernels.len());
}

fn module(family: Family) -> naga::Module {
    let src = family.source();
    naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{}: {}", family.file(), e.emit_to_string(&src)))
}

/// The WGSL scalar a Rust field type names, if it is one.
fn scalar(rust: &str) -> Option<naga::Scalar> {
    match rust {
        "u32" => Some(naga::Scalar::U32),
        "f32" => Some(naga::Scalar::F32),
        _ => None,
    }
}

#[test]
fn each_familys_parameters_and_bindings_match_its_rust_mirror() {
    for family in Family::ALL {
        let m = module(family);
        let (structs, slots) = declared(family);
        let file = family.file();
        // The parameters: binding 1 holds `P`, and each mirrored struct's fields are the WGSL
        // struct's members, at the same offsets, of the same sizes and scalar types.
        let params = m.global_variables.iter().find(|(_, v)| v.binding.as_ref().is_some_and(|b| b.binding == 1));
        let params = params.unwrap_or_else(|| panic!("{file}: no binding 1"));
        assert_eq!(m.types[params.1.ty].name.as_deref(), Some("P"), "{file}: binding 1");
        for (name, fields, bytes) in structs {
            let ty = m.types.iter().find(|(_, t)| t.name.as_deref() == Some(name));
            let ty = ty.unwrap_or_else(|| panic!("{file}: no struct {name}")).1;
            let naga::TypeInner::Struct { members, span } = &ty.inner else {
                panic!("{file}: {name} is not a struct");
            };
            assert_eq!(*span as usize, bytes, "{file}: {name}'s size");
            assert_eq!(members.len(), fields.len(), "{file}: struct {name}'s fields");
            for (mem, &(field, offset, size, rust)) in members.iter().zip(fields) {
                let inner = &m.types[mem.ty].inner;
                let wgsl = (mem.name.as_deref().unwrap_or(""), mem.offset as usize, inner.size(m.to_ctx()) as usize);
                assert_eq!(wgsl, (field, offset, size), "{file}: {name}.{field}");
                // Scalars by type too; arrays and vectors by size.
                if let Some(scalar) = scalar(rust) {
                    assert_eq!(inner.scalar(), Some(scalar), "{file}: {name}.{field}'s type");
                }
            }
        }
        // The storage bindings: numbers and names.
        let mut wgsl: Vec<(u32, String)> = m
            .global_variables
            .iter()
            .filter_map(|(_, v)| {
                let b = v.binding.as_ref()?;
                (b.group == 0 && b.binding >= 2).then(|| (b.binding, v.name.clone().unwrap_or_default()))
            })
            .collect();
        wgsl.sort();
        let rust: Vec<(u32, String)> = slots.iter().map(|&(n, name)| (n, name.to_string())).collect();
        assert_eq!(wgsl, rust, "{file}: storage bindings");
    }
}
