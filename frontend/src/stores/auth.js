import { defineStore } from 'pinia'
import { computed, ref } from 'vue'

const KEY = 'perfpulse.token'

/** The access token, kept for the browser session (sessionStorage), and the login call. */
export const useAuthStore = defineStore('auth', () => {
  const token = ref(sessionStorage.getItem(KEY))
  const username = ref(sessionStorage.getItem(`${KEY}.user`))
  const isAuthenticated = computed(() => Boolean(token.value))

  async function login(name, password, fetchImpl = fetch) {
    const response = await fetchImpl('/api/auth/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username: name, password }),
    })
    if (!response.ok) {
      let message = `Login failed (${response.status})`
      try {
        const body = await response.json()
        if (typeof body.detail === 'string') message = body.detail
        else if (Array.isArray(body.detail)) message = body.detail.map((d) => d.msg).join('; ')
      } catch {
        // keep the status message
      }
      const error = new Error(message)
      // How many more failures before this address must wait, and how long a wait is.
      const left = response.headers.get('X-Login-Attempts-Left')
      error.attemptsLeft = left === null ? null : Number(left)
      const wait = response.status === 429 ? response.headers.get('Retry-After') : null
      error.retryAfter = wait === null ? null : Number(wait)
      throw error
    }
    const body = await response.json()
    token.value = body.access_token
    username.value = name
    sessionStorage.setItem(KEY, body.access_token)
    sessionStorage.setItem(`${KEY}.user`, name)
  }

  /** Forget the token here (it was refused, or the user signs out). */
  function logout() {
    token.value = null
    username.value = null
    sessionStorage.removeItem(KEY)
    sessionStorage.removeItem(`${KEY}.user`)
  }

  /** The user's "Log out": the server revokes the token (on every instance), then it is
   * forgotten here. A failed call still logs out locally; the token expires anyway. */
  async function signOut(fetchImpl = fetch) {
    const current = token.value
    logout()
    if (!current) return
    try {
      await fetchImpl('/api/auth/logout', {
        method: 'POST',
        headers: { Authorization: `Bearer ${current}` },
      })
    } catch {
      // offline or server gone: nothing more to do here
    }
  }

  return { token, username, isAuthenticated, login, logout, signOut }
})
