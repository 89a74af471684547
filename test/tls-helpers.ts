import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
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

/** The validity period of a test certificate. Both ends may lie in the past or in the future. */
export interface Validity {
  notBefore: Date;
  notAfter: Date;
}

/**
 * Creates a self-signed RSA certificate for `hostname` with openssl, as
 * `<name>.key` and `<name>.crt` in `dir`, valid from now for 90 days unless
 * `validity` sets the dates. Writing to existing paths replaces the files,
 * which is how the reload tests rotate a certificate.
 */
export async function makeCertificate(
  dir: string,
  name: string,
  hostname: string,
  validity?: Validity,
): Promise<TestCertificate> {
  const keyPath = path.join(dir, `${name}.key`);
  const certPath = path.join(dir, `${name}.crt`);
  const subject = ["-subj", `/CN=${hostname}`, "-addext", `subjectAltName=DNS:${hostname}`];
  if (validity) {
    await signWithDates(keyPath, certPath, subject, validity);
  } else {
    // 90 days, so that the server's warning about certificates that expire within 14 days stays quiet.
    await run("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyPath, "-out", certPath, "-days", "90", ...subject]);
  }
  const pem = await readFile(certPath, "utf8");
  return { keyPath, certPath, pem, fingerprint: new X509Certificate(pem).fingerprint256 };
}

/** The smallest `openssl ca` setup that signs a request as it is, SAN included. */
const CA_CONFIG = `[ca]
default_ca = test_ca
[test_ca]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any_name
unique_subject = no
copy_extensions = copy
[any_name]
commonName = supplied
`;

/** Formats a date as the GeneralizedTime that `openssl ca -startdate` and `-enddate` take: YYYYMMDDHHMMSSZ. */
function generalizedTime(date: Date): string {
  return date.toISOString().replace(/[-:T]/g, "").replace(/\.\d{3}Z$/, "Z");
}

/**
 * Writes a key and a self-signed certificate with the given dates.
 * `openssl req -x509` of OpenSSL 3.0 only takes `-days` from now, while
 * `openssl ca -selfsign` takes any start and end date.
 */
async function signWithDates(keyPath: string, certPath: string, subject: string[], validity: Validity): Promise<void> {
  const work = await mkdtemp(`${certPath}-ca-`);
  try {
    await Promise.all([
      writeFile(path.join(work, "ca.cnf"), CA_CONFIG),
      writeFile(path.join(work, "index.txt"), ""),
      writeFile(path.join(work, "serial"), "01\n"),
    ]);
    const request = path.join(work, "request.csr");
    await run("openssl", ["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", keyPath, "-out", request, ...subject]);
    await run(
      "openssl",
      [
        "ca", "-batch", "-config", "ca.cnf", "-selfsign", "-keyfile", keyPath, "-in", request, "-out", certPath, "-notext",
        "-startdate", generalizedTime(validity.notBefore), "-enddate", generalizedTime(validity.notAfter),
      ],
      { cwd: work },
    );
  } finally {
    await rm(work, { recursive: true, force: true });
  }
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
