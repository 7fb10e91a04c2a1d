//! One program run on several CPUs at once (BPF_PROG_TEST_RUN from one pinned thread per CPU),
//! to see what shared writable state costs: a bucket's or the global budget's atomic add, the
//! ring buffer's lock, a hash map's bucket lock all move cache lines between the CPUs that
//! touch them, where per-CPU and read-only state does not.
use anyhow::{bail, Result};

/// BPF_PROG_TEST_RUN of `frame` on the program `fd`, `repeat` times: the kernel's mean ns per
/// run. aya's test_run needs the program by `&mut`, which one thread at a time can hold; the
/// syscall itself takes a descriptor any thread may use.
pub fn test_run(fd: i32, frame: &[u8], repeat: u32) -> Result<u32> {
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    // union bpf_attr's `test` member: prog_fd, retval, data_size_in, data_size_out, data_in,
    // data_out, repeat, duration, ... (uapi/linux/bpf.h).
    let mut attr = [0u8; 80];
    attr[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    attr[16..24].copy_from_slice(&(frame.as_ptr() as u64).to_ne_bytes());
    attr[32..36].copy_from_slice(&repeat.to_ne_bytes());
    // SAFETY: a zero-padded bpf_attr whose pointer (the frame) outlives the call.
    let rc =
        unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, attr.as_mut_ptr(), attr.len()) };
    if rc != 0 {
        bail!("BPF_PROG_TEST_RUN: {}", std::io::Error::last_os_error());
    }
    Ok(u32::from_ne_bytes(attr[36..40].try_into().expect("4 bytes")))
}

/// Pins the calling thread to `cpu`.
pub fn pin_to(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Mean ns per packet of the program `fd` over each CPU's `frames` (each run `repeat` times,
/// in turn) on each of `cpus` at the same moment: one pinned thread per CPU, started together.
pub fn on_cpus(fd: i32, cpus: &[usize], frames: &[&[Vec<u8>]], repeat: u32) -> Result<Vec<f64>> {
    let start = std::sync::Barrier::new(cpus.len());
    std::thread::scope(|scope| {
        let threads: Vec<_> = cpus
            .iter()
            .zip(frames)
            .map(|(&cpu, frames)| {
                let start = &start;
                scope.spawn(move || -> Result<f64> {
                    pin_to(cpu)?;
                    start.wait();
                    let mut total = 0u64;
                    for frame in frames.iter() {
                        total += u64::from(test_run(fd, frame, repeat)?);
                    }
                    Ok(total as f64 / frames.len() as f64)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("a bench thread panicked")).collect()
    })
}
