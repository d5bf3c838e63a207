// TLS: the files NOMAD_CACERT, NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY (and any PEM file a script
// reads), checked with node:crypto before anything connects: they exist, parse, are in their validity
// window, the key matches the certificate and the CA issued it.
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { type Checks } from './env.mts'

/** TLS files: exist, parse as PEM, not expired (warning under 30 days), key matches cert, cert issued by CA. */
export function checkTls(check: Checks, files: { ca: string; cert?: string; key?: string }) {
  if (Boolean(files.cert) !== Boolean(files.key)) check.problem('NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY go together: set both or neither')
  const ca = readCerts(check, 'NOMAD_CACERT', files.ca, { bundle: true })
  // The client certificate first, then the intermediates it may be sent with.
  const chain = files.cert ? readCerts(check, 'NOMAD_CLIENT_CERT', files.cert) : undefined
  const cert = chain?.[0]
  if (files.key && cert) {
    const pem = readPem(check, 'NOMAD_CLIENT_KEY', files.key)
    if (pem !== undefined) {
      try {
        if (!cert.checkPrivateKey(createPrivateKey(pem))) check.problem(`NOMAD_CLIENT_KEY (${files.key}) does not match NOMAD_CLIENT_CERT (${files.cert})`)
      } catch {
        check.problem(/BEGIN ENCRYPTED PRIVATE KEY|Proc-Type: 4,ENCRYPTED/.test(pem)
          ? `NOMAD_CLIENT_KEY (${files.key}) is encrypted with a passphrase, which the nomad CLI cannot ask for: decrypt a copy (openssl pkey -in ${files.key} -out client-key.plain.pem) and point NOMAD_CLIENT_KEY at it`
          : `NOMAD_CLIENT_KEY (${files.key}) is not a PEM private key`)
      }
    }
  }
  if (ca && chain && !issuedBy(chain, ca))
    check.problem(`NOMAD_CLIENT_CERT (${files.cert}) was not issued by NOMAD_CACERT (${files.ca})`)
}

/** Does a CA of `roots` issue chain[0], directly or through the intermediates that follow it in the file? */
function issuedBy(chain: X509Certificate[], roots: X509Certificate[]): boolean {
  const signs = (issuer: X509Certificate, c: X509Certificate) => c.checkIssued(issuer) && c.verify(issuer.publicKey)
  let current = chain[0]
  const rest = chain.slice(1)
  for (let hops = 0; hops <= rest.length; hops++) {
    if (roots.some((r) => signs(r, current))) return true
    const next = rest.find((c) => signs(c, current))
    if (!next) return false
    current = next
  }
  return false
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

/**
 * PEM certificates in a file: each parses, none expired (a warning under 30 days left). A CA `bundle`
 * may hold an expired certificate beside valid ones (a rotation): a warning, unless none is valid.
 */
export function readCerts(check: Checks, name: string, file: string, { bundle = false } = {}): X509Certificate[] | undefined {
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
  const valid = certs.filter((c) => Date.parse(c.validTo) >= Date.now() && Date.parse(c.validFrom) <= Date.now())
  for (const c of certs) {
    const left = (Date.parse(c.validTo) - Date.now()) / 86_400_000
    const which = certs.length > 1 ? ` holds ${c.subject.replace(/\n/g, ', ')}, which` : ''
    if (left < 0) {
      if (bundle && valid.length) check.warn(`${name} (${file})${which} expired on ${c.validTo}, beside valid ones: remove it once the rotation is over`)
      else check.problem(`${name} (${file})${which} expired on ${c.validTo}`)
    } else if (left < 30) check.warn(`${name} (${file})${which} expires in ${Math.floor(left)} days (${c.validTo})`)
    if (Date.parse(c.validFrom) > Date.now() && !(bundle && valid.length)) check.problem(`${name} (${file})${which} is not valid before ${c.validFrom}`)
  }
  return bundle ? valid : certs
}
