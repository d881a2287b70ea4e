//! Writes the floor guest image (host kernel + busybox initramfs) into the directory given
//! as the first argument: `cargo run -p capsa-core --example floor-image DIR`. Used by
//! scripts/bench-machine.sh.

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: floor-image DIR");
        std::process::exit(2);
    };
    if let Err(e) = capsa_core::machine::floor::write_image(std::path::Path::new(&dir)) {
        eprintln!("Error: {e}");
        std::process::exit(1);
    }
}
