//! Builds the CUDA kernels in `kernels/*.cu` twice:
//!
//! 1. For GPUs: nvcc → one fatbin (SASS for sm_80 and sm_90a, PTX for compute_80) embedded in the
//!    binary and loaded at run time through cudarc. nvcc is found through $NVCC, $CUDA_HOME/bin
//!    or PATH; without it the build goes on with no GPU kernels and says so in a cargo warning
//!    (SCALERL_REQUIRE_NVCC=1 makes that an error). ptxas's resource report (-Xptxas -v) is kept
//!    in OUT_DIR/ptxas.txt; a test fails when a kernel spills registers.
//! 2. For interpret mode: g++ compiles the same sources with -DSCALERL_INTERPRET together with
//!    the runtime in kernels/interpret/, so CI runs every kernel on the CPU with CUDA semantics.
//!    SCALERL_SANITIZE=address|thread builds that C++ under ASan/TSan (the Rust side must then
//!    link the runtime: RUSTFLAGS="-C link-arg=-l:libasan.a", see scripts/test.sh). An ASan
//!    build also compiles kernels/selftest/asan_canary.cu (a planted out-of-bounds write) and
//!    sets cfg(scalerl_asan), so a test can prove ASan still reports.
//!    SCALERL_STATIC_STDCXX=1 links libstdc++ statically (scripts/gpu-check.sh: the bundle must
//!    run on a machine whose libstdc++ is older or missing).
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    for var in ["NVCC", "CUDA_HOME", "SCALERL_REQUIRE_NVCC", "SCALERL_SANITIZE", "SCALERL_STATIC_STDCXX", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo::rustc-check-cfg=cfg(scalerl_fatbin)");
    println!("cargo::rustc-check-cfg=cfg(scalerl_asan)");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let kernels = kernel_sources();
    build_fatbin(&kernels, &out);
    build_interpret(&kernels);
}

/// The product kernels: kernels/*.cu (not the runtime's selftests), in a stable order.
fn kernel_sources() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("kernels")
        .expect("kernels/ directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    v.sort();
    v
}

fn find_nvcc() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("NVCC") {
        return Some(PathBuf::from(p));
    }
    if let Ok(home) = std::env::var("CUDA_HOME") {
        let p = Path::new(&home).join("bin/nvcc");
        if p.exists() {
            return Some(p);
        }
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("nvcc")).find(|p| p.exists()))
}

/// One translation unit that includes every kernel file: nvcc -fatbin takes one input.
fn write_all_kernels_unit(kernels: &[PathBuf], out: &Path) -> PathBuf {
    let unit = out.join("all_kernels.cu");
    let body: String = kernels
        .iter()
        .map(|k| format!("#include \"{}\"\n", std::fs::canonicalize(k).unwrap().display()))
        .collect();
    std::fs::write(&unit, body).unwrap();
    unit
}

fn build_fatbin(kernels: &[PathBuf], out: &Path) {
    let fatbin = out.join("kernels.fatbin");
    let ptxas = out.join("ptxas.txt");
    let require = std::env::var("SCALERL_REQUIRE_NVCC").as_deref() == Ok("1");
    // Empty files mean "no GPU kernels in this build"; the device layer reports that at run time.
    std::fs::write(&fatbin, b"").unwrap();
    std::fs::write(&ptxas, b"").unwrap();
    let Some(nvcc) = find_nvcc() else {
        if require {
            panic!("SCALERL_REQUIRE_NVCC=1 but nvcc was not found (set NVCC or CUDA_HOME; scripts/install-nvcc.sh installs it)");
        }
        println!("cargo:warning=nvcc not found (NVCC, CUDA_HOME, PATH): building without GPU kernels; interpret mode and the CPU backend still work");
        return;
    };
    if kernels.is_empty() {
        return;
    }
    let unit = write_all_kernels_unit(kernels, out);
    let result = Command::new(&nvcc)
        .args(["-fatbin", "-O3", "-std=c++17", "-Xptxas", "-v", "-lineinfo"])
        .args(["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90a,code=sm_90a"])
        .arg("-gencode=arch=compute_80,code=compute_80")
        .arg("-I")
        .arg(std::fs::canonicalize("kernels").unwrap())
        .arg("-o")
        .arg(&fatbin)
        .arg(&unit)
        .output();
    match result {
        Ok(o) if o.status.success() => {
            // ptxas writes its resource report on stderr.
            std::fs::write(&ptxas, &o.stderr).unwrap();
            println!("cargo:rustc-cfg=scalerl_fatbin");
        }
        Ok(o) => panic!("nvcc failed on the kernels:\n{}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            if require {
                panic!("cannot run {}: {e}", nvcc.display());
            }
            println!("cargo:warning=cannot run {}: {e}; building without GPU kernels", nvcc.display());
        }
    }
}

fn build_interpret(kernels: &[PathBuf]) {
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++20")
        .define("SCALERL_INTERPRET", None)
        .include("kernels")
        .warnings(false)
        .opt_level(2)
        .flag("-g");
    match std::env::var("SCALERL_SANITIZE").as_deref() {
        Ok("address") => {
            b.flag("-fsanitize=address").flag("-fno-omit-frame-pointer").opt_level(1);
            // The canary kernel that proves ASan reports from inside the Rust test binaries.
            b.file("kernels/selftest/asan_canary.cu");
            println!("cargo:rustc-cfg=scalerl_asan");
        }
        Ok("thread") => {
            b.flag("-fsanitize=thread").opt_level(1);
        }
        _ => {}
    }
    for f in ["fiber.cpp", "collectives.cpp", "runtime.cpp"] {
        b.file(Path::new("kernels/interpret").join(f));
    }
    for k in kernels {
        // The kernels are CUDA sources; in interpret mode they are plain C++.
        b.file(k);
    }
    b.flag("-x").flag("c++");
    b.cargo_metadata(false);
    b.compile("scalerl_interp");
    let out = std::env::var("OUT_DIR").unwrap();
    println!("cargo:rustc-link-search=native={out}");
    // whole-archive: kernels register themselves from static initialisers that nothing references.
    println!("cargo:rustc-link-lib=static:+whole-archive=scalerl_interp");
    if std::env::var("SCALERL_STATIC_STDCXX").as_deref() == Ok("1") {
        // The GPU check's bundle runs on a machine we did not build on, whose libstdc++ may be
        // older or absent: link g++'s libstdc++.a into the executables instead (-bundle: the
        // archive goes to the final link, not into the rlib).
        let a = Command::new(std::env::var("CXX").unwrap_or_else(|_| "g++".into()))
            .arg("-print-file-name=libstdc++.a")
            .output()
            .ok()
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .filter(|p| p.is_absolute() && p.exists())
            .unwrap_or_else(|| panic!("SCALERL_STATIC_STDCXX=1: g++ -print-file-name=libstdc++.a found no libstdc++.a (install libstdc++-dev)"));
        println!("cargo:rustc-link-search=native={}", a.parent().unwrap().display());
        println!("cargo:rustc-link-lib=static:-bundle=stdc++");
    } else {
        println!("cargo:rustc-link-lib=dylib=stdc++");
    }
}
