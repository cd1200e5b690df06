/**
 * NBD_OPT_STARTTLS, the NBD spec's TLS upgrade, in TLS-required mode (the only mode we offer:
 * a server given credentials never serves data in the clear).
 *
 * Before TLS:    STARTTLS (no data)  → ACK, then the TLS handshake on the same socket
 *                ABORT               → handled as usual (ACK, close)
 *                EXPORT_NAME         → close (it has no error reply; the spec says so)
 *                anything else       → ERR_TLS_REQD, and the next option is read
 * After TLS:     STARTTLS            → ERR_INVALID; everything else as usual
 * Without credentials the server is not a TLS server: STARTTLS is ERR_UNSUP as before.
 *
 * The upgrade. The client sends nothing after STARTTLS until it has our ACK, so the reader
 * holds no bytes then; if it does, the client broke the protocol and the connection closes
 * (those bytes cannot belong to TLS). The socket is handed to a one-connection tls.Server as a
 * 'connection' (Node's own path for server-side TLS: certificate and client-certificate
 * checks, PSK callback, handshake errors), which wraps the socket's handle, so the cleartext
 * is read by a new SocketReader fed from the TLS socket's 'data' chunks (one copy more per
 * byte than a plain socket). The old reader is left behind: its socket no longer reads.
 *
 * TLS-PSK. Node 20 (OpenSSL 3) answers PSK in TLS 1.3 and 1.2; GnuTLS clients (libnbd, qemu)
 * negotiate TLS 1.3 with it. `ciphers: 'PSK'` adds the TLS 1.2 PSK suites, which OpenSSL's
 * default list leaves out; TLS 1.3 suites are configured apart and stay the defaults.
 */
import type { Socket } from 'node:net';
import { type TLSSocket, type TlsOptions, Server as TlsServer } from 'node:tls';
import { assert } from '@fss/core';
import { Option, Reply } from './protocol';
import { openSocketReader, type SocketReader } from './socket-reader';
import type { NbdTlsCredentials } from './tls-credentials';

/** What negotiate() gives the TLS step for one option. */
export interface TlsOptionContext {
  /** The server's credentials; undefined: no TLS. */
  readonly tls?: NbdTlsCredentials | undefined;
  /** TLS is in place on this connection. */
  readonly secured: boolean;
  readonly socket: Socket;
  readonly reader: SocketReader;
  /** Sends the option's reply of `type`, with a message for errors. */
  readonly reply: (type: number, message?: string) => void;
  readonly debug?: (message: string) => void;
}

export type TlsStep =
  /** Not TLS's business: answer the option as usual. */
  | { readonly kind: 'pass' }
  /** Answered: read the next option. */
  | { readonly kind: 'answered' }
  | { readonly kind: 'close'; readonly reason: string; readonly notable?: boolean }
  /** TLS is on: go on with this socket and reader. */
  | { readonly kind: 'secured'; readonly socket: TLSSocket; readonly reader: SocketReader };

/** Judges one option against the TLS requirement, upgrading the connection on STARTTLS. */
export async function answerTlsOption(
  context: TlsOptionContext,
  option: number,
  data: Buffer,
): Promise<TlsStep> {
  const { tls, secured } = context;
  if (tls === undefined) return { kind: 'pass' };
  if (option === Option.STARTTLS) {
    if (secured) {
      context.reply(Reply.ERR_INVALID, 'TLS is already on');
      return { kind: 'answered' };
    }
    if (data.length !== 0) {
      context.reply(Reply.ERR_INVALID, 'STARTTLS takes no data');
      return { kind: 'answered' };
    }
    if (context.reader.bufferedBytes > 0)
      return { kind: 'close', reason: 'data after STARTTLS before its reply' };
    context.reply(Reply.ACK);
    return upgrade(context, tls);
  }
  if (secured || option === Option.ABORT) return { kind: 'pass' };
  if (option === Option.EXPORT_NAME) return { kind: 'close', reason: 'EXPORT_NAME before STARTTLS' };
  context.reply(Reply.ERR_TLS_REQD, 'TLS is required: send STARTTLS first');
  return { kind: 'answered' };
}

/** The TLS handshake on `context.socket`; a failed one closes the connection. */
async function upgrade(context: TlsOptionContext, tls: NbdTlsCredentials): Promise<TlsStep> {
  const server = new TlsServer(tlsServerOptions(tls));
  const secured = new Promise<TLSSocket | string>((resolve) => {
    server.once('secureConnection', (socket: TLSSocket) => resolve(socket));
    server.once('tlsClientError', (error: Error) => resolve(`TLS handshake failed: ${error.message}`));
    // A client certificate that fails verification is destroyed without an event.
    context.socket.once('close', () => resolve('closed during the TLS handshake'));
  });
  server.emit('connection', context.socket);
  const outcome = await secured;
  if (typeof outcome === 'string') {
    context.socket.destroy();
    // A refused client (wrong key, untrusted certificate) is worth the operator's log.
    return { kind: 'close', reason: outcome, notable: true };
  }
  assert(!outcome.destroyed, 'a secured socket is open');
  context.debug?.(`TLS on: ${outcome.getProtocol()} ${outcome.getCipher().name}`);
  const { socket, reader } = openSocketReader(outcome, false);
  assert(socket === outcome, 'a TLS socket is read through its chunks');
  return { kind: 'secured', socket: outcome, reader };
}

/** Node's TLS server options for the credentials. */
export function tlsServerOptions(tls: NbdTlsCredentials): TlsOptions {
  if (tls.kind === 'x509') {
    return {
      cert: tls.cert,
      key: tls.key,
      ca: tls.ca,
      requestCert: tls.verifyPeer,
      rejectUnauthorized: tls.verifyPeer,
      allowHalfOpen: true,
    };
  }
  const keys = tls.keys;
  assert(keys.size > 0, 'a PSK server has keys');
  return {
    ciphers: 'PSK',
    // An unknown identity gets no key: the handshake fails (bad_record_mac/unknown_psk_identity).
    pskCallback: (_socket, identity) => keys.get(identity) ?? null,
    allowHalfOpen: true,
  };
}
