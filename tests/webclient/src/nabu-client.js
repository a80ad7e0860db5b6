// The official Pipecat web client (client-js + WebSocket transport) as one browser bundle.
// Built with esbuild into nabu_pipeline/web/nabu-client.js, which `nabu serve` ships at
// /nabu-client.js for its page, and which the browser test loads. WavMediaManager records
// the microphone with the Web Audio API and plays 24 kHz PCM; it needs no network (the
// default DailyMediaManager loads code from Daily's servers).
export { PipecatClient, RTVIEvent, LogLevel } from "@pipecat-ai/client-js";
export {
  ProtobufFrameSerializer,
  WavMediaManager,
  WebSocketTransport,
} from "@pipecat-ai/websocket-transport";
