import * as tokens from '../functions/shared/tokens';

/**
 * The functions' own token counter, once its tokenizer is loaded (newer versions load the ranks
 * lazily behind `tokenizerReady()`; older ones had them at import).
 */
export async function loadMessageTokens(): Promise<(content: string) => number> {
  const ready = (tokens as { tokenizerReady?: () => Promise<unknown> }).tokenizerReady;
  if (typeof ready === 'function') await ready();
  return (content) => tokens.messageTokens(content);
}
