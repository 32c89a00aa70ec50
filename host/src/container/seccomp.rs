//! The default seccomp profile of a container: `linux.seccomp` of the
//! runtime spec unless the app says `seccomp = "unconfined"`.
//!
//! The profile is data, `seccomp/default.json`: an OCI `LinuxSeccomp` object
//! (what runc reads) made from moby's default profile (moby/profiles, tag
//! `seccomp/v0.2.3`) by resolving moby's conditions once, for what every
//! berth container is: x86_64 (with its x86 and x32 compat ABIs), the
//! capability set of [`super::spec::DEFAULT_CAPS`], a kernel of at least 4.8.
//! `seccomp/README.md` says rule by rule what was kept, dropped and why.
//!
//! In short: every call that is not listed fails with `EPERM`; namespaces
//! cannot be made or joined (`unshare`, `setns`, `mount` are not listed;
//! `clone` is allowed only without any `CLONE_NEW*` flag, `CLONE_NEWUSER`
//! included); `clone3` fails with `ENOSYS` so that libc falls back to the
//! checkable `clone`; `socket` refuses `AF_ALG` and `AF_VSOCK`; `personality`
//! takes only the harmless personas; `io_uring`, `bpf`, `keyctl`,
//! `userfaultfd`, `ptrace` on old kernels, module loading and the like are
//! not listed.
//!
//! runc 1.1 silently ignores a name its libseccomp does not know (the call
//! then falls to the default action, or to `ENOSYS` when its number is above
//! every known name's); the README lists the names runc 1.1.5 with
//! libseccomp 2.5.4 ignores here.

use oci_spec::runtime::LinuxSeccomp;

/// The profile as it is stored (see the module docs).
pub const DEFAULT_PROFILE_JSON: &str = include_str!("seccomp/default.json");

/// berth's default profile, parsed.
///
/// # Errors
/// When the stored profile is not a valid `LinuxSeccomp` (a unit test keeps
/// it valid).
pub fn default_profile() -> Result<LinuxSeccomp, serde_json::Error> {
    serde_json::from_str(DEFAULT_PROFILE_JSON)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use oci_spec::runtime::{
        Arch, LinuxSeccompAction as Action, LinuxSeccompOperator as Op, LinuxSyscall,
    };

    use super::*;

    fn rules_for<'a>(p: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        p.syscalls()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|r| r.names().iter().any(|n| n == name))
            .collect()
    }

    /// Names allowed whatever their arguments.
    fn allowed(p: &LinuxSeccomp) -> BTreeSet<&str> {
        p.syscalls()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|r| r.action() == Action::ScmpActAllow && r.args().is_none())
            .flat_map(|r| r.names().iter().map(String::as_str))
            .collect()
    }

    #[test]
    fn the_stored_profile_parses_and_denies_by_default() {
        let p = default_profile().unwrap();
        assert_eq!(p.default_action(), Action::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1), "EPERM");
        // runc 1.1 refuses an architecture it does not know (RISCV64 among
        // them): only these three.
        assert_eq!(
            p.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        let names: usize = p
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .map(|r| r.names().len())
            .sum();
        assert_eq!(
            names, 376,
            "moby's 361 unconditional names and 15 of its rules"
        );
        // A few of moby's unconditional list, spot-checked.
        let allowed = allowed(&p);
        for name in [
            "read", "write", "openat", "execve", "fork", "vfork", "futex", "ptrace",
        ] {
            assert!(allowed.contains(name), "{name}");
        }
    }

    #[test]
    fn namespaces_cannot_be_made_or_joined() {
        let p = default_profile().unwrap();
        let allowed = allowed(&p);
        // Gated on CAP_SYS_ADMIN (and the like) in moby's profile; berth
        // gives no such capability, so none of them is listed.
        for name in [
            "unshare",
            "setns",
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "open_by_handle_at",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "userfaultfd",
            "io_uring_setup",
            "kexec_load",
            "init_module",
            "finit_module",
            "reboot",
            "syslog",
            "settimeofday",
            "clock_settime",
            "sethostname",
            "setdomainname",
            "mbind",
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "acct",
            "iopl",
            "ioperm",
            "fsopen",
            "move_mount",
        ] {
            assert!(rules_for(&p, name).is_empty(), "{name} is listed");
            assert!(!allowed.contains(name), "{name}");
        }
        // clone: only without namespace flags. CLONE_NEWNS | CLONE_NEWCGROUP |
        // CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
        // CLONE_NEWNET.
        let mask = 0x0002_0000
            | 0x0200_0000
            | 0x0400_0000
            | 0x0800_0000
            | 0x1000_0000
            | 0x2000_0000
            | 0x4000_0000;
        assert_eq!(mask, 2_114_060_288, "moby's mask");
        let clone = rules_for(&p, "clone");
        assert_eq!(clone.len(), 1);
        let args = clone[0].args().as_deref().unwrap();
        assert_eq!(clone[0].action(), Action::ScmpActAllow);
        assert_eq!(args.len(), 1);
        assert_eq!(
            (args[0].index(), args[0].value(), args[0].op()),
            (0, mask, Op::ScmpCmpMaskedEq)
        );
        assert_eq!(args[0].value_two().unwrap_or(0), 0);
        // clone3 hides its flags behind a pointer: ENOSYS, so libc uses clone.
        let clone3 = rules_for(&p, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), Action::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(38), "ENOSYS");
    }

    #[test]
    fn argument_filters_kept() {
        let p = default_profile().unwrap();
        // socket: every family but AF_ALG (38) and AF_VSOCK (40).
        let socket: Vec<(usize, u64, Op)> = rules_for(&p, "socket")
            .iter()
            .map(|r| {
                let a = &r.args().as_deref().unwrap()[0];
                (a.index(), a.value(), a.op())
            })
            .collect();
        assert_eq!(
            socket,
            [
                (0, 38, Op::ScmpCmpLt),
                (0, 39, Op::ScmpCmpEq),
                (0, 40, Op::ScmpCmpGt)
            ]
        );
        // personality: Linux, its query, and the harmless persona bits.
        let personas: Vec<u64> = rules_for(&p, "personality")
            .iter()
            .map(|r| {
                let a = &r.args().as_deref().unwrap()[0];
                assert_eq!((a.index(), a.op()), (0, Op::ScmpCmpEq));
                a.value()
            })
            .collect();
        assert_eq!(personas, [0, 8, 0x20000, 0x20008, 0xffff_ffff]);
        // x86_64 only calls of moby's arch-conditional rules.
        let allowed = allowed(&p);
        assert!(allowed.contains("arch_prctl") && allowed.contains("modify_ldt"));
        for other_arch in ["set_tls", "cacheflush", "s390_runtime_instr", "swapcontext"] {
            assert!(rules_for(&p, other_arch).is_empty(), "{other_arch}");
        }
    }
}
