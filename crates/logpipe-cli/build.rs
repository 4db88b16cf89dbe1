//! Links jemalloc's baked-in options (src/malloc_conf.c) into the binary.
//!
//! The object is passed to the linker directly, not in an archive: nothing
//! refers to `_rjem_malloc_conf` from outside jemalloc, so an archive
//! member defining it would never be pulled in.

fn main() {
    println!("cargo:rerun-if-changed=src/malloc_conf.c");
    // No jemalloc on msvc (see the allocator in main.rs); on windows-gnu
    // jemalloc's own definition of the options is not weak, so a second
    // one would not link.
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "windows" {
        return;
    }
    let objects = cc::Build::new()
        .file("src/malloc_conf.c")
        .compile_intermediates();
    for object in objects {
        println!("cargo:rustc-link-arg-bins={}", object.display());
    }
}
