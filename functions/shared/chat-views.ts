import type { ChatInfo, ChatSettings, ChatSummary } from './chat-repository';
import { isoDate } from './http';

/** Every setting of a chat, null where the deployment's value applies. */
export function settingsView(settings: ChatSettings) {
  return {
    model: settings.model ?? null,
    temperature: settings.temperature ?? null,
    max_tokens: settings.max_tokens ?? null,
    max_context_tokens: settings.max_context_tokens ?? null,
    ttl_days: settings.ttl_days ?? null,
  };
}

export function summaryView(chat: ChatSummary) {
  return {
    id: chat.id,
    created_at: isoDate(chat.created_at),
    updated_at: isoDate(chat.updated_at),
    message_count: chat.message_count,
  };
}

export function infoView(chat: ChatInfo) {
  return { ...summaryView(chat), usage: chat.usage, settings: settingsView(chat.settings) };
}
