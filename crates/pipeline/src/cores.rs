//! Core ids: which cores exist, checking configured ids, and restricting threads to cores.

use crate::PipelineError;

/// The core ids of this machine that are online, as the operating system numbers them
/// (`/sys/devices/system/cpu/online`), whatever cores the calling thread is restricted to.
/// Where that file cannot be read: the cores the calling thread may run on.
pub fn available_cores() -> Vec<usize> {
    if let Some(cores) = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|text| parse_core_list(text.trim()))
    {
        return cores;
    }
    allowed_cores()
}

/// The cores the calling thread may run on now (its affinity), as the operating system
/// numbers them.
pub fn allowed_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .iter()
        .map(|core| core.id)
        .collect()
}

/// Parses the kernel's list format: `0-3,6,8-9`.
fn parse_core_list(text: &str) -> Option<Vec<usize>> {
    let mut cores = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((first, last)) => cores.extend(first.parse::<usize>().ok()?..=last.parse().ok()?),
            None => cores.push(part.parse().ok()?),
        }
    }
    (!cores.is_empty()).then_some(cores)
}

/// Checks that `cores` is a non-empty list of [`available_cores`]; `what` names the setting in
/// errors.
pub fn check_cores(what: &'static str, cores: &[usize]) -> Result<(), PipelineError> {
    if cores.is_empty() {
        return Err(PipelineError::NoCores { what });
    }
    let available = available_cores();
    if let Some(&core) = cores.iter().find(|core| !available.contains(core)) {
        return Err(PipelineError::BadCore {
            stage: what,
            core,
            available,
        });
    }
    Ok(())
}

/// Restricts the calling thread to `cores`; every thread it starts afterwards inherits the
/// restriction (a stage with a core of its own in [`StageCores`] is pinned there instead).
/// `what` names the setting in errors. Ids are checked against [`available_cores`] first.
pub fn restrict_thread_to_cores(what: &'static str, cores: &[usize]) -> Result<(), PipelineError> {
    check_cores(what, cores)?;
    #[allow(unsafe_code)]
    // SAFETY: `set` is a plain bit set owned by this frame; ids were checked to be cores this
    // machine has, all below CPU_SETSIZE.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &core in cores {
            libc::CPU_SET(core, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if result != 0 {
        return Err(PipelineError::Affinity {
            what,
            cores: cores.to_vec(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_core_list;

    #[test]
    fn the_kernels_core_list_format_is_parsed() {
        assert_eq!(parse_core_list("0"), Some(vec![0]));
        assert_eq!(parse_core_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_core_list("0-2,5,7-8"), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(parse_core_list(""), None);
        assert_eq!(parse_core_list("0-x"), None);
    }
}
