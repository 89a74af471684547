import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { PeerCertificate } from "node:tls";
import { promisify } from "node:util";
import type { SmtpTestClient } from "@mailroom/testing";

const run = promisify(execFile);

/** A self-signed certificate made for one test run. */
export interface TestCertificate {
  keyPath: string;
  certPath: string;
  /** The certificate in PEM, to pass as `ca` so a client accepts only this one. */
  pem: string;
  /** SHA-256 fingerprint in the colon-separated form Node prints. */
  fingerprint: string;
}

/**
 * Creates a self-signed RSA certificate for `hostname` with openssl, as
 * `<name>.key` and `<name>.crt` in `dir`. Writing to existing paths replaces
 * the files, which is how the reload tests rotate a certificate.
 */
export async function makeCertificate(dir: string, name: string, hostname: string): Promise<TestCertificate> {
  const keyPath = path.join(dir, `${name}.key`);
  const certPath = path.join(dir, `${name}.crt`);
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    keyPath,
    "-out",
    certPath,
    "-days",
    "2",
    "-subj",
    `/CN=${hostname}`,
    "-addext",
    `subjectAltName=DNS:${hostname}`,
  ]);
  const pem = await readFile(certPath, "utf8");
  return { keyPath, certPath, pem, fingerprint: new X509Certificate(pem).fingerprint256 };
}

/**
 * Sends EHLO and STARTTLS, then completes the handshake trusting only
 * `certificate`; returns the certificate the server presented. The
 * handshake fails unless the server presents exactly that certificate.
 */
export async function startTls(
  client: SmtpTestClient,
  options: { servername: string; certificate: TestCertificate; ehlo?: boolean },
): Promise<PeerCertificate> {
  if (options.ehlo !== false) {
    const ehlo = await client.command("EHLO client.example");
    if (ehlo.code !== 250) throw new Error(`EHLO failed: ${ehlo.raw}`);
  }
  const ready = await client.command("STARTTLS");
  if (ready.code !== 220) throw new Error(`STARTTLS failed: ${ready.raw}`);
  let presented: PeerCertificate | undefined;
  await client.upgrade({
    servername: options.servername,
    ca: options.certificate.pem,
    rejectUnauthorized: true,
    checkServerIdentity: (_host, certificate) => {
      presented = certificate;
      return undefined;
    },
  });
  if (!presented) throw new Error("the TLS handshake finished without a server certificate check");
  return presented;
}
