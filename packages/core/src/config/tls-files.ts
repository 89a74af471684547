import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { ConfigError, type LoadedConfig } from "./load.js";

/** A key and certificate as read from their PEM files. */
export interface CertificateFiles {
  key: Buffer;
  cert: Buffer;
}

/** The files of `server.tls`: the default pair and one pair per SNI name (lower case). */
export interface TlsFiles extends CertificateFiles {
  sni: Map<string, CertificateFiles>;
}

/**
 * Reads the key and certificate files of `server.tls` and has OpenSSL parse
 * each one and check that each key matches its certificate, so a broken file
 * is reported with its path and option before a listener uses it. Throws a
 * ConfigError naming the file, the option and its line. Returns undefined
 * without `server.tls`.
 */
export function loadTlsFiles(loaded: LoadedConfig): TlsFiles | undefined {
  const tls = loaded.config.server.tls;
  if (!tls) return undefined;
  const sni = new Map<string, CertificateFiles>();
  for (const [name, entry] of Object.entries(tls.sni)) {
    sni.set(name.toLowerCase(), loadPair(loaded, entry, ["server", "tls", "sni", name]));
  }
  return { ...loadPair(loaded, tls, ["server", "tls"]), sni };
}

function loadPair(loaded: LoadedConfig, files: { key: string; cert: string }, keyPath: string[]): CertificateFiles {
  const fail = (option: string, text: string, cause: unknown) => {
    const optionPath = [...keyPath, option];
    const line = loaded.lineOf(optionPath);
    return new ConfigError(`${loaded.file}${line ? `:${line}` : ""}: ${optionPath.join(".")}: ${text}`, { cause });
  };
  const read = (option: "key" | "cert") => {
    const file = files[option];
    let content: Buffer;
    try {
      content = readFileSync(file);
    } catch (error) {
      throw fail(option, `cannot read ${file}: ${(error as Error).message}`, error);
    }
    // Node's TLS accepts an empty key or certificate, and then every handshake fails (seen with Node 20).
    if (content.toString("latin1").trim() === "") throw fail(option, `${file} is empty`, undefined);
    return content;
  };

  const key = read("key");
  const cert = read("cert");
  if (/^-----BEGIN (?:ENCRYPTED PRIVATE KEY|[A-Z ]+PRIVATE KEY-----\r?\nProc-Type: 4,ENCRYPTED)/m.test(key.toString("latin1"))) {
    const hint = `openssl pkey -in ${files.key} -out NEW.pem`;
    throw fail("key", `${files.key} is an encrypted private key, and server.tls has no passphrase option; store it decrypted (${hint})`, undefined);
  }
  try {
    createSecureContext({ key });
  } catch (error) {
    throw fail("key", `${files.key} is not a PEM private key (${(error as Error).message})`, error);
  }
  try {
    createSecureContext({ cert });
  } catch (error) {
    throw fail("cert", `${files.cert} is not a PEM certificate (${(error as Error).message})`, error);
  }
  try {
    createSecureContext({ key, cert });
  } catch (error) {
    throw fail("cert", `${files.cert} does not match the key ${files.key} (${(error as Error).message})`, error);
  }
  return { key, cert };
}
