// Resolves the bare specifier `ioredis` to the lean copy (registered by local/lean-ioredis.ts).
let target;

export function initialize(data) {
  target = data.target;
}

export async function resolve(specifier, context, next) {
  if (specifier === 'ioredis' && target !== undefined)
    return { url: target, format: 'commonjs', shortCircuit: true };
  return next(specifier, context);
}
