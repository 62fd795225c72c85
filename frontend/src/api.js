import { useAuthStore } from '@/stores/auth'

/** An API error with the server's own words (a 422 names the parameter and why). */
export class ApiError extends Error {
  constructor(message, status) {
    super(message)
    this.status = status
  }
}

/**
 * GET an API path with the session's token. A 401 logs out (the token is gone or
 * revoked) and calls `onUnauthorized`; any other failure throws an ApiError.
 */
export async function apiGet(path, params, { onUnauthorized = () => {}, fetchImpl = fetch } = {}) {
  const query = params ? `?${params}` : ''
  return request('GET', `${path}${query}`, undefined, { onUnauthorized, fetchImpl })
}

/** POST, PATCH or DELETE with a JSON body, as apiGet does GET (204: null). */
export async function apiSend(method, path, body, { onUnauthorized = () => {}, fetchImpl = fetch } = {}) {
  return request(method, path, body, { onUnauthorized, fetchImpl })
}

async function request(method, url, payload, { onUnauthorized, fetchImpl }) {
  const auth = useAuthStore()
  const headers = { Authorization: `Bearer ${auth.token}` }
  if (payload !== undefined) headers['Content-Type'] = 'application/json'
  const response = await fetchImpl(url, {
    method,
    headers,
    body: payload === undefined ? undefined : JSON.stringify(payload),
  })
  if (response.status === 401) {
    auth.logout()
    onUnauthorized()
    throw new ApiError('Session expired', 401)
  }
  let body = null
  try {
    body = await response.json()
  } catch {
    // not JSON (or 204): the status says enough
  }
  if (!response.ok) {
    const detail = Array.isArray(body?.detail)
      ? body.detail.map((d) => `${d.loc.at(-1)}: ${d.msg}`).join('; ')
      : body?.detail
    throw new ApiError(detail ?? `HTTP ${response.status}`, response.status)
  }
  return body
}
