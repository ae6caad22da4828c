//! Every WGSL module parses and validates with naga, and so does every specialisation (entry
//! point + override constants) that the GPU backend asks for; the workgroup memory the backend
//! asks of an adapter is what the largest kernel uses. Needs no adapter.

use gpu_train::backend::gpu::shaders::{all_kernels, Family, WORKGROUP_BYTES};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use std::collections::HashMap;

fn validate(module: &naga::Module) -> naga::valid::ModuleInfo {
    Validator::new(ValidationFlags::all(), Capabilities::empty())
        .validate(module)
        .unwrap_or_else(|e| panic!("{}", e.emit_to_string("")))
}

#[test]
fn every_module_and_specialisation_validates() {
    let mut modules = HashMap::new();
    for family in Family::ALL {
        let src = family.source();
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{}: {}", family.file(), e.emit_to_string(&src)));
        let info = validate(&module);
        modules.insert(family, (module, info));
    }
    let kernels = all_kernels();
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
    // Every family is used, and matmul families have both non-split and split kernels.
    assert!(kernels.len() > 60, "{} kernels", kernels.len());
}
