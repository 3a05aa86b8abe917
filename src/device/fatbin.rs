//! The GPU kernels compiled by nvcc at build time (build.rs), embedded in the binary.

/// `include_bytes!` gives no alignment guarantee; cuModuleLoadData wants the image aligned.
#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);

static FATBIN: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/kernels.fatbin")));

/// The fatbin (SASS sm_80 + sm_90a, PTX compute_80); empty when the build had no nvcc.
pub fn fatbin() -> &'static [u8] {
    &FATBIN.0
}

/// ptxas's `-v` resource report for every kernel (registers, shared memory, spills).
pub const PTXAS_REPORT: &str = include_str!(concat!(env!("OUT_DIR"), "/ptxas.txt"));

/// Kernels of this build whose ptxas report shows spill stores or loads.
pub fn spilling_kernels() -> Vec<String> {
    spills_in(PTXAS_REPORT)
}

/// Kernels of a ptxas `-v` report with spill stores or loads, each with its arch and the line.
pub fn spills_in(report: &str) -> Vec<String> {
    let mut current = String::new();
    let mut out = Vec::new();
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            current = rest.split('\'').next().unwrap_or("").to_string();
            if let Some(arch) = line.split("for '").nth(1) {
                current = format!("{current} ({})", arch.trim_end_matches(['\'', ' ']));
            }
        }
        // "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"
        let spill = |what: &str| {
            line.split(',').any(|part| part.trim().ends_with(what) && !part.trim().starts_with("0 bytes"))
        };
        if spill("spill stores") || spill("spill loads") {
            out.push(format!("{current}: {}", line.trim()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn spill_parser_finds_spills() {
        let report = "ptxas info    : Compiling entry function 'k1' for 'sm_80'\n    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\nptxas info    : Compiling entry function 'k2' for 'sm_90a'\n    8 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n";
        let s = super::spills_in(report);
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(s[0].starts_with("k2 (sm_90a)"), "{s:?}");
    }

    #[test]
    fn no_kernel_spills_registers() {
        let spills = super::spilling_kernels();
        assert!(spills.is_empty(), "register spills:\n{}", spills.join("\n"));
        if super::fatbin().is_empty() {
            println!("skipped: built without nvcc, no ptxas report to check");
            assert!(std::env::var("SCALERL_REQUIRE_NVCC").as_deref() != Ok("1"), "SCALERL_REQUIRE_NVCC=1 but no fatbin");
        } else {
            assert!(super::PTXAS_REPORT.contains("rmsnorm_residual_bf16"), "{}", super::PTXAS_REPORT);
        }
    }
}
