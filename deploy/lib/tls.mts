// TLS: the files NOMAD_CACERT, NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY (and any PEM file a script
// reads), checked with node:crypto before anything connects: they exist, parse, are in their validity
// window, the key matches the certificate and the CA issued it.
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { type Checks } from './env.mts'

/** TLS files: exist, parse as PEM, not expired (warning under 30 days), key matches cert, cert issued by CA. */
export function checkTls(check: Checks, files: { ca: string; cert?: string; key?: string }) {
  if (Boolean(files.cert) !== Boolean(files.key)) check.problem('NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY go together: set both or neither')
  const ca = readCerts(check, 'NOMAD_CACERT', files.ca)
  const cert = files.cert ? readCerts(check, 'NOMAD_CLIENT_CERT', files.cert)?.[0] : undefined
  if (files.key && cert) {
    const pem = readPem(check, 'NOMAD_CLIENT_KEY', files.key)
    if (pem !== undefined) {
      try {
        if (!cert.checkPrivateKey(createPrivateKey(pem))) check.problem(`NOMAD_CLIENT_KEY (${files.key}) does not match NOMAD_CLIENT_CERT (${files.cert})`)
      } catch {
        check.problem(`NOMAD_CLIENT_KEY (${files.key}) is not a PEM private key`)
      }
    }
  }
  if (ca && cert && !ca.some((c) => cert.checkIssued(c) && cert.verify(c.publicKey)))
    check.problem(`NOMAD_CLIENT_CERT (${files.cert}) was not issued by NOMAD_CACERT (${files.ca})`)
}

export function readPem(check: Checks, name: string, file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8')
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    const hint = name.startsWith('NOMAD_') ? ' (see certs/README.md)' : ''
    check.missing(`${name}: ${file} ${code === 'ENOENT' ? 'does not exist' : `cannot be read (${code})`}${hint}`)
  }
}

/** PEM certificates in a file: each parses, none expired (a warning under 30 days left). */
export function readCerts(check: Checks, name: string, file: string): X509Certificate[] | undefined {
  const pem = readPem(check, name, file)
  if (pem === undefined) return
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
  const certs: X509Certificate[] = []
  for (const block of blocks) {
    try {
      certs.push(new X509Certificate(block))
    } catch {
      /* reported below */
    }
  }
  if (!certs.length || certs.length !== blocks.length) {
    check.problem(`${name} (${file}) is not a PEM certificate`)
    return
  }
  for (const c of certs) {
    const left = (Date.parse(c.validTo) - Date.now()) / 86_400_000
    if (left < 0) check.problem(`${name} (${file}) expired on ${c.validTo}`)
    else if (left < 30) check.warn(`${name} (${file}) expires in ${Math.floor(left)} days (${c.validTo})`)
    if (Date.parse(c.validFrom) > Date.now()) check.problem(`${name} (${file}) is not valid before ${c.validFrom}`)
  }
  return certs
}
