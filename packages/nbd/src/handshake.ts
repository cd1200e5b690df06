/**
 * The fixed newstyle handshake, as a small state machine run once per connection:
 *
 *   GREETING ──send greeting── CLIENT_FLAGS ──read u32── OPTIONS ─┬─ GO (ACK) ─────────→ transmission
 *                                   │ unknown bits                ├─ EXPORT_NAME (found) → transmission
 *                                   ▼                             ├─ ABORT → ACK, close
 *                                 close                           ├─ anything else → reply, OPTIONS
 *                                                                 └─ bad magic / too long / EOF → close
 *
 * Each option gets exactly one final reply before the next is read (the client waits for it).
 * INFO and GO answer INFO_EXPORT, BLOCK_SIZE always (nbdkit does too: a client that asks must
 * obey it, one that did not ask learns the same limits), NAME and DESCRIPTION when asked.
 * STRUCTURED_REPLY is acknowledged (replies become chunks); LIST/SET_META_CONTEXT match the
 * export's metadata contexts (meta-context.ts; SET needs structured replies first, else
 * ERR_INVALID). A server with TLS credentials requires STARTTLS first (starttls.ts judges
 * every option before it is answered here); without, STARTTLS is ERR_UNSUP. Options we do not
 * implement (EXTENDED_HEADERS, unknown numbers) get ERR_UNSUP and the
 * handshake goes on. EXPORT_NAME of an unknown export can only be answered by closing (the option
 * has no error reply). Malformed option data is ERR_INVALID; an option header without the
 * magic, or longer than we accept, closes the connection.
 */
import type { Socket } from 'node:net';
import { assert } from '@fss/core';
import type { NbdExport } from './export';
import { matchContexts, type SelectedContext, selectContexts } from './meta-context';
import {
  ClientFlag,
  EXPORT_NAME_PADDING_BYTES,
  HandshakeFlag,
  IHAVEOPT,
  Info,
  Limits,
  NBD_MAGIC,
  OPTION_HEADER_BYTES,
  OPTION_REPLY_HEADER_BYTES,
  OPTION_REPLY_MAGIC,
  Option,
  optionName,
  Reply,
} from './protocol';
import type { SocketReader } from './socket-reader';
import { answerTlsOption } from './starttls';
import type { NbdTlsCredentials } from './tls-credentials';

export interface HandshakeContext {
  readonly socket: Socket;
  readonly reader: SocketReader;
  /** Every export this server serves; the first is the default (empty name). */
  readonly exports: readonly NbdExport[];
  /** True once the server is shutting down: options are then refused with ERR_SHUTDOWN. */
  readonly isClosing: () => boolean;
  /** TLS credentials: TLS is then required (starttls.ts). Undefined: no TLS. */
  readonly tls?: NbdTlsCredentials;
  /** After STARTTLS: the connection goes on with this socket and reader. */
  readonly onSecured?: (socket: Socket, reader: SocketReader) => void;
  readonly debug?: (message: string) => void;
}

/** How the handshake ended. */
export type HandshakeResult =
  | {
      readonly kind: 'transmission';
      readonly export: NbdExport;
      /** Replies are structured chunks (STRUCTURED_REPLY was acknowledged). */
      readonly structured: boolean;
      /** The metadata contexts selected for this export (BLOCK_STATUS needs one). */
      readonly metaContexts: readonly SelectedContext[];
    }
  /**
   * The client aborted or was refused; the connection is to be closed. `notable`: worth the
   * operator's log, not only the debug trace (a failed TLS handshake).
   */
  | { readonly kind: 'close'; readonly reason: string; readonly notable?: boolean };

const KNOWN_CLIENT_FLAGS = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES;

/** Runs the handshake to its end. Rejects with EndOfStream if the peer goes away. */
export async function negotiate(initial: HandshakeContext): Promise<HandshakeResult> {
  let context = initial;
  let secured = false;
  assert(context.exports.length > 0, 'a server needs at least one export');
  sendGreeting(context.socket);
  const clientFlags = readU32(await context.reader.read(4), 0);
  if ((clientFlags & ~KNOWN_CLIENT_FLAGS) !== 0) {
    return { kind: 'close', reason: `unknown client flags 0x${clientFlags.toString(16)}` };
  }
  const state: NegotiationState = {
    noZeroes: (clientFlags & ClientFlag.NO_ZEROES) !== 0,
    structured: false,
    selection: undefined,
  };

  for (let count = 0; count < Limits.OPTION_COUNT_MAX; count++) {
    const header = await context.reader.read(OPTION_HEADER_BYTES);
    const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
    if (view.getBigUint64(0) !== IHAVEOPT) return { kind: 'close', reason: 'option without IHAVEOPT' };
    const option = view.getUint32(8);
    const length = view.getUint32(12);
    if (length > Limits.OPTION_DATA_BYTES_MAX) {
      return { kind: 'close', reason: `option ${optionName(option)} data of ${length} bytes is too long` };
    }
    // Copy: the reader may hand out a view of a socket chunk, and we keep the data a while.
    const data = Buffer.from(await context.reader.read(length));
    context.debug?.(`option ${optionName(option)} (${length} bytes)`);
    const reply = (type: number, message?: string): void =>
      sendReply(context.socket, option, type, message === undefined ? undefined : text(message));
    const step = await answerTlsOption({ ...context, secured, reply }, option, data);
    if (step.kind === 'close') return step;
    if (step.kind === 'answered') continue;
    if (step.kind === 'secured') {
      context = { ...context, socket: step.socket, reader: step.reader };
      secured = true;
      context.onSecured?.(step.socket, step.reader);
      continue;
    }
    const result = answerOption(context, option, data, state);
    if (result !== undefined) return result;
  }
  return { kind: 'close', reason: `more than ${Limits.OPTION_COUNT_MAX} options` };
}

/** What the options so far have negotiated. */
interface NegotiationState {
  readonly noZeroes: boolean;
  structured: boolean;
  /** What the last SET_META_CONTEXT selected, and for which export. */
  selection: { readonly export: NbdExport; readonly contexts: readonly SelectedContext[] } | undefined;
}

/** Answers one option; returns a result when the handshake is over. */
function answerOption(
  context: HandshakeContext,
  option: number,
  data: Buffer,
  state: NegotiationState,
): HandshakeResult | undefined {
  const { socket } = context;
  if (option === Option.ABORT) {
    sendReply(socket, option, Reply.ACK);
    return { kind: 'close', reason: 'client aborted' };
  }
  if (context.isClosing()) {
    if (option !== Option.EXPORT_NAME) sendReply(socket, option, Reply.ERR_SHUTDOWN, text('shutting down'));
    return { kind: 'close', reason: 'server shutting down' };
  }
  switch (option) {
    case Option.EXPORT_NAME:
      return answerExportName(context, data, state);
    case Option.LIST:
      answerList(context, data);
      return undefined;
    case Option.INFO:
    case Option.GO:
      return answerInfo(context, option, data, state);
    case Option.STRUCTURED_REPLY:
      if (data.length !== 0) {
        sendReply(socket, option, Reply.ERR_INVALID, text('STRUCTURED_REPLY takes no data'));
      } else {
        state.structured = true;
        sendReply(socket, option, Reply.ACK);
      }
      return undefined;
    case Option.LIST_META_CONTEXT:
    case Option.SET_META_CONTEXT:
      answerMetaContext(context, option, data, state);
      return undefined;
    default:
      sendReply(socket, option, Reply.ERR_UNSUP, text(`option ${option} is not supported`));
      return undefined;
  }
}

/** EXPORT_NAME: size and flags, no option reply; an unknown name can only close. */
function answerExportName(context: HandshakeContext, data: Buffer, state: NegotiationState): HandshakeResult {
  const found = findExport(context.exports, data.toString('utf8'));
  if (found === undefined) return { kind: 'close', reason: 'EXPORT_NAME of an unknown export' };
  const reply = Buffer.alloc(10 + (state.noZeroes ? 0 : EXPORT_NAME_PADDING_BYTES));
  reply.writeBigUInt64BE(BigInt(found.size), 0);
  reply.writeUInt16BE(found.transmissionFlags, 8);
  context.socket.write(reply);
  return transmission(found, state);
}

/** Enters transmission with what was negotiated; selected contexts count for their export only. */
function transmission(found: NbdExport, state: NegotiationState): HandshakeResult {
  const { selection } = state;
  const selected = state.structured && selection?.export === found;
  return {
    kind: 'transmission',
    export: found,
    structured: state.structured,
    metaContexts: selected ? selection.contexts : [],
  };
}

/**
 * LIST_META_CONTEXT and SET_META_CONTEXT. Data: u32 name length, export name, u32 query count,
 * count × (u32 length, query); the queries are matched by meta-context.ts. SET replaces the
 * previous selection, also when it fails, and needs structured replies first.
 */
function answerMetaContext(
  context: HandshakeContext,
  option: number,
  data: Buffer,
  state: NegotiationState,
): void {
  const { socket } = context;
  const selects = option === Option.SET_META_CONTEXT;
  if (selects) state.selection = undefined;
  const request = parseMetaContextRequest(data);
  if (request === undefined) {
    sendReply(socket, option, Reply.ERR_INVALID, text('malformed meta context data'));
    return;
  }
  if (selects && !state.structured) {
    sendReply(socket, option, Reply.ERR_INVALID, text('SET_META_CONTEXT needs structured replies first'));
    return;
  }
  const found = findExport(context.exports, request.name);
  if (found === undefined) {
    sendReply(socket, option, Reply.ERR_UNKNOWN, text(`no export named '${request.name}'`));
    return;
  }
  const match = matchContexts(found.metaContexts(), request.queries, selects ? 'set' : 'list');
  if (match.kind === 'invalid') {
    sendReply(socket, option, Reply.ERR_INVALID, text(`query '${match.query}' has no namespace`));
    return;
  }
  // LIST replies carry id 0 (reserved); SET numbers what it selected.
  const replied = selects
    ? selectContexts(match.contexts)
    : match.contexts.map((each) => ({ id: 0, context: each }));
  if (selects && replied.length > 0) state.selection = { export: found, contexts: replied };
  for (const { id, context: each } of replied) {
    sendReply(socket, option, Reply.META_CONTEXT, Buffer.concat([u32(id), text(each.name)]));
  }
  sendReply(socket, option, Reply.ACK);
}

/** Parses meta-context option data; undefined when the lengths disagree with the data. */
export function parseMetaContextRequest(data: Buffer): { name: string; queries: string[] } | undefined {
  if (data.length < 8) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > Limits.NAME_BYTES_MAX || 4 + nameLength + 4 > data.length) return undefined;
  const name = data.toString('utf8', 4, 4 + nameLength);
  const count = data.readUInt32BE(4 + nameLength);
  const queries: string[] = [];
  let at = 4 + nameLength + 4;
  for (let index = 0; index < count; index++) {
    if (at + 4 > data.length) return undefined;
    const length = data.readUInt32BE(at);
    if (at + 4 + length > data.length) return undefined;
    queries.push(data.toString('utf8', at + 4, at + 4 + length));
    at += 4 + length;
  }
  return at === data.length ? { name, queries } : undefined;
}

/** LIST: one SERVER reply per export (name, then description), then ACK. */
function answerList(context: HandshakeContext, data: Buffer): void {
  if (data.length !== 0) {
    sendReply(context.socket, Option.LIST, Reply.ERR_INVALID, text('LIST takes no data'));
    return;
  }
  for (const each of context.exports) {
    const name = Buffer.from(each.name, 'utf8');
    const payload = Buffer.alloc(4 + name.length);
    payload.writeUInt32BE(name.length, 0);
    name.copy(payload, 4);
    sendReply(context.socket, Option.LIST, Reply.SERVER, Buffer.concat([payload, text(each.description)]));
  }
  sendReply(context.socket, Option.LIST, Reply.ACK);
}

/**
 * INFO and GO. Data: u32 name length, name, u16 count, count × u16 info type. A length that
 * disagrees with the data is ERR_INVALID; an unknown name ERR_UNKNOWN.
 */
function answerInfo(
  context: HandshakeContext,
  option: number,
  data: Buffer,
  state: NegotiationState,
): HandshakeResult | undefined {
  const { socket } = context;
  const request = parseInfoRequest(data);
  if (request === undefined) {
    sendReply(socket, option, Reply.ERR_INVALID, text('malformed INFO/GO data'));
    return undefined;
  }
  const found = findExport(context.exports, request.name);
  if (found === undefined) {
    sendReply(socket, option, Reply.ERR_UNKNOWN, text(`no export named '${request.name}'`));
    return undefined;
  }
  const exportInfo = Buffer.alloc(12);
  exportInfo.writeUInt16BE(Info.EXPORT, 0);
  exportInfo.writeBigUInt64BE(BigInt(found.size), 2);
  exportInfo.writeUInt16BE(found.transmissionFlags, 10);
  sendReply(socket, option, Reply.INFO, exportInfo);

  const blockSize = Buffer.alloc(14);
  blockSize.writeUInt16BE(Info.BLOCK_SIZE, 0);
  blockSize.writeUInt32BE(found.minimumBlockSize, 2);
  blockSize.writeUInt32BE(found.preferredBlockSize, 6);
  blockSize.writeUInt32BE(found.maximumBlockSize, 10);
  sendReply(socket, option, Reply.INFO, blockSize);

  if (request.infos.includes(Info.NAME)) {
    sendReply(socket, option, Reply.INFO, Buffer.concat([u16(Info.NAME), text(found.name)]));
  }
  if (request.infos.includes(Info.DESCRIPTION) && found.description !== '') {
    sendReply(socket, option, Reply.INFO, Buffer.concat([u16(Info.DESCRIPTION), text(found.description)]));
  }
  sendReply(socket, option, Reply.ACK);
  return option === Option.GO ? transmission(found, state) : undefined;
}

/** Parses INFO/GO data; undefined when the lengths disagree with the data. */
export function parseInfoRequest(data: Buffer): { name: string; infos: number[] } | undefined {
  if (data.length < 6) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > Limits.NAME_BYTES_MAX || 4 + nameLength + 2 > data.length) return undefined;
  const name = data.toString('utf8', 4, 4 + nameLength);
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 4 + nameLength + 2 + 2 * count) return undefined;
  const infos: number[] = [];
  for (let index = 0; index < count; index++) infos.push(data.readUInt16BE(4 + nameLength + 2 + 2 * index));
  return { name, infos };
}

/** The empty name is the default export (the first); any other name must match exactly. */
export function findExport(exports: readonly NbdExport[], name: string): NbdExport | undefined {
  if (name === '') return exports[0];
  return exports.find((each) => each.name === name);
}

function sendGreeting(socket: Socket): void {
  const greeting = Buffer.alloc(18);
  greeting.writeBigUInt64BE(NBD_MAGIC, 0);
  greeting.writeBigUInt64BE(IHAVEOPT, 8);
  greeting.writeUInt16BE(HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES, 16);
  socket.write(greeting);
}

/** One option reply, header and data in one write. */
function sendReply(socket: Socket, option: number, type: number, data: Buffer = Buffer.alloc(0)): void {
  const reply = Buffer.alloc(OPTION_REPLY_HEADER_BYTES + data.length);
  reply.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  reply.writeUInt32BE(option, 8);
  reply.writeUInt32BE(type, 12);
  reply.writeUInt32BE(data.length, 16);
  data.copy(reply, OPTION_REPLY_HEADER_BYTES);
  socket.write(reply);
}

function text(value: string): Buffer {
  return Buffer.from(value, 'utf8');
}

function u32(value: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32BE(value, 0);
  return bytes;
}

function u16(value: number): Buffer {
  const bytes = Buffer.alloc(2);
  bytes.writeUInt16BE(value, 0);
  return bytes;
}

function readU32(bytes: Uint8Array, offset: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(offset);
}
