//! Is it a Wasm component, and what does it import and export?
//!
//! Every Wasm binary starts with the magic `\0asm` and a 4-byte version field:
//! `01 00 00 00` for a core module, `0d 00 01 00` for a component (version
//! 0x0d, layer 1). berth runs components only, so a core module is refused
//! before it is stored as an app or pushed.

use wasmparser::{Parser, Payload};

use super::OciError;

const MAGIC: &[u8; 4] = b"\0asm";
const CORE_MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
/// Bytes needed by [`ensure_component`].
pub const HEADER_LEN: usize = 8;

/// Checks the header of a Wasm binary: it must be a component.
///
/// `header` is the start of the binary (at least [`HEADER_LEN`] bytes for a
/// useful answer); `what` names it in errors (a file name, a digest).
///
/// # Errors
/// [`OciError::CoreModule`] for a core module and [`OciError::NotAComponent`]
/// for anything that is not a Wasm binary or uses another component encoding.
pub fn ensure_component(header: &[u8], what: &str) -> Result<(), OciError> {
    let not = |detail: String| OciError::NotAComponent {
        what: what.to_owned(),
        detail,
    };
    let Some(magic_and_version) = header.get(..HEADER_LEN) else {
        return Err(not(format!("only {} bytes long", header.len())));
    };
    let (magic, version) = magic_and_version.split_at(4);
    if magic != MAGIC {
        return Err(not(format!(
            "it does not start with the Wasm magic bytes (found {})",
            hex::encode(magic)
        )));
    }
    if version == CORE_MODULE_VERSION {
        return Err(OciError::CoreModule {
            what: what.to_owned(),
        });
    }
    if version != COMPONENT_VERSION {
        return Err(not(format!(
            "unsupported Wasm binary version {} (a component has {})",
            hex::encode(version),
            hex::encode(COMPONENT_VERSION)
        )));
    }
    Ok(())
}

/// The top-level import and export names of a component, e.g.
/// `wasi:http/incoming-handler@0.2.6`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentWorld {
    /// Names of the outer component's imports, in binary order, deduplicated.
    pub imports: Vec<String>,
    /// Names of the outer component's exports, in binary order, deduplicated.
    pub exports: Vec<String>,
}

/// Reads the names the outer component imports and exports. Nested
/// components and core modules are skipped.
///
/// # Errors
/// The errors of [`ensure_component`], and [`OciError::NotAComponent`] if
/// the binary cannot be parsed.
pub fn world(wasm: &[u8], what: &str) -> Result<ComponentWorld, OciError> {
    ensure_component(wasm, what)?;
    let mut world = ComponentWorld::default();
    // `parse_all` walks nested modules and components too; only depth 0 is
    // the outer component's interface.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| OciError::NotAComponent {
            what: what.to_owned(),
            detail: format!("malformed component: {e}"),
        })?;
        let malformed = |e: wasmparser::BinaryReaderError| OciError::NotAComponent {
            what: what.to_owned(),
            detail: format!("malformed component: {e}"),
        };
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    push_unique(&mut world.imports, import.map_err(malformed)?.name.name);
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    push_unique(&mut world.exports, export.map_err(malformed)?.name.name);
                }
            }
            _ => {}
        }
    }
    Ok(world)
}

fn push_unique(names: &mut Vec<String>, name: &str) {
    if !names.iter().any(|n| n == name) {
        names.push(name.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_module_is_not_a_component() {
        let err = ensure_component(b"\0asm\x01\0\0\0", "hello.wasm").unwrap_err();
        assert_eq!(
            err.to_string(),
            "hello.wasm is a core Wasm module, not a component"
        );
        assert!(world(b"\0asm\x01\0\0\0", "m").is_err());
    }

    #[test]
    fn headers() {
        ensure_component(b"\0asm\x0d\0\x01\0", "c").unwrap();
        for (bytes, needle) in [
            (&b""[..], "only 0 bytes"),
            (b"\0asm", "only 4 bytes"),
            (b"\x7fELF\x02\x01\x01\0", "magic"),
            (b"\0asm\x0c\0\x01\0", "0c000100"),
        ] {
            let msg = ensure_component(bytes, "x").unwrap_err().to_string();
            assert!(msg.contains("x is not a Wasm component"), "{msg}");
            assert!(msg.contains(needle), "{msg}");
        }
    }

    /// A section: id, size (one LEB128 byte is enough here), contents.
    fn section(id: u8, contents: &[u8]) -> Vec<u8> {
        assert!(contents.len() < 128);
        [&[id, contents.len() as u8][..], contents].concat()
    }

    /// `0x00 len name`: an import or export name.
    fn name(n: &str) -> Vec<u8> {
        [&[0x00, n.len() as u8][..], n.as_bytes()].concat()
    }

    /// `(component (type (instance)) (import NAME (instance (type 0))) (export NAME (instance 0)) extra...)`
    fn component(import: &str, export: &str, extra: &[u8]) -> Vec<u8> {
        let types = section(7, &[0x01, 0x42, 0x00]);
        let imports = section(10, &[&[0x01][..], &name(import), &[0x05, 0x00]].concat());
        let exports = section(
            11,
            &[&[0x01][..], &name(export), &[0x05, 0x00, 0x00]].concat(),
        );
        [&b"\0asm\x0d\0\x01\0"[..], &types, extra, &imports, &exports].concat()
    }

    #[test]
    fn world_lists_only_the_outer_imports_and_exports() {
        let inner = component("inner:pkg/imported", "inner:pkg/exported", &[]);
        let nested = [
            section(1, b"\0asm\x01\0\0\0"), // a core module
            section(4, &inner),             // a nested component
        ]
        .concat();
        let outer = component(
            "wasi:cli/environment@0.2.6",
            "wasi:http/incoming-handler@0.2.6",
            &nested,
        );
        let w = world(&outer, "outer").unwrap();
        assert_eq!(w.imports, ["wasi:cli/environment@0.2.6"]);
        assert_eq!(w.exports, ["wasi:http/incoming-handler@0.2.6"]);
    }

    #[test]
    fn world_of_an_empty_component() {
        assert_eq!(
            world(b"\0asm\x0d\0\x01\0", "empty").unwrap(),
            ComponentWorld::default()
        );
        let msg = world(b"\0asm\x0d\0\x01\0\x0b\x05", "trunc")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("malformed component"), "{msg}");
    }
}
