//! Cache-line prefetches. Safe to call with any address: a prefetch
//! never faults and changes nothing a program can observe but timing.

/// Asks for the line holding `p`, for reading, into every cache level.
#[inline(always)]
pub fn read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A prefetch for writing (PREFETCHW: the line comes in exclusive state,
/// so the write that follows needs no second transfer). CPUs without it
/// (Intel before Broadwell) execute it as a no-op.
#[inline(always)]
pub fn write(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address, and touches
    // no register or flag.
    unsafe {
        std::arch::asm!("prefetchw [{}]", in(reg) p, options(nostack, preserves_flags, readonly))
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
