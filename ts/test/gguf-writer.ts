// Writes a GGUF v3 header (its tensor table left out) from a recorded metadata dump, so the GGUF reader is tested on
// real keys and values without committing a model file. Types follow the GGUF specification's
// conventions for each key; array values (given in the dump as digests) are left out.

type Kind = "u32" | "u64" | "f32" | "bool" | "string";

function kindOf(key: string): Kind | undefined {
  if (/^tokenizer\.ggml\.(tokens|merges|scores|token_type)$/.test(key)) return undefined;
  if (key === "general.parameter_count") return "u64";
  if (/(epsilon|freq_base)$/.test(key)) return "f32";
  if (/^tokenizer\.ggml\.add_/.test(key)) return "bool";
  if (/^(general\.architecture|general\.name|tokenizer\.ggml\.(model|pre))$/.test(key)) return "string";
  return "u32";
}

const TYPE_ID: Record<Kind, number> = { u32: 4, f32: 6, bool: 7, string: 8, u64: 10 };

/** GGUF bytes holding the dump's scalar keys (plus any extra string keys), and the keys written. */
export function ggufFromDump(
  dump: Record<string, string>,
  extraStrings: Record<string, string> = {},
): { bytes: Uint8Array; written: string[] } {
  const parts: Uint8Array[] = [];
  const enc = new TextEncoder();
  const u32 = (v: number) => {
    const b = new DataView(new ArrayBuffer(4));
    b.setUint32(0, v, true);
    parts.push(new Uint8Array(b.buffer));
  };
  const u64 = (v: bigint) => {
    const b = new DataView(new ArrayBuffer(8));
    b.setBigUint64(0, v, true);
    parts.push(new Uint8Array(b.buffer));
  };
  const str = (s: string) => {
    const bytes = enc.encode(s);
    u64(BigInt(bytes.length));
    parts.push(bytes);
  };
  const written = Object.keys(dump).filter((k) => !/^(blk|token_embd|output)/.test(k) && kindOf(k) !== undefined);
  parts.push(enc.encode("GGUF"));
  u32(3);
  u64(1n); // one tensor declared, as in a model file (its table is left out: readers stop at the metadata)
  u64(BigInt(written.length + Object.keys(extraStrings).length));
  for (const key of written) {
    const kind = kindOf(key) as Kind;
    const value = dump[key] as string;
    str(key);
    u32(TYPE_ID[kind]);
    if (kind === "u32") u32(Number(value));
    else if (kind === "u64") u64(BigInt(value));
    else if (kind === "f32") {
      const b = new DataView(new ArrayBuffer(4));
      b.setFloat32(0, Number(value), true);
      parts.push(new Uint8Array(b.buffer));
    } else if (kind === "bool") parts.push(new Uint8Array([value === "true" ? 1 : 0]));
    else str(value);
  }
  for (const [key, value] of Object.entries(extraStrings)) {
    str(key);
    u32(TYPE_ID.string);
    str(value);
  }
  const total = parts.reduce((n, p) => n + p.length, 0);
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return { bytes, written: [...written, ...Object.keys(extraStrings)] };
}
